package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNRICommandRefusesBadConfig checks what kfault nri rejects before it touches BPF
// (no root or kernel support needed).
func TestNRICommandRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := map[string]struct {
		args []string
		code int
		want string
	}{
		"unknown flag":            {args: []string{"--bogus"}, code: 2, want: "flag provided but not defined"},
		"stray argument":          {args: []string{"extra"}, code: 2, want: `unexpected arguments ["extra"]`},
		"help":                    {args: []string{"-h"}, code: 0, want: "usage: kfault nri"},
		"missing config file":     {args: []string{"--config", filepath.Join(dir, "nope.yaml")}, code: 1, want: "reading config"},
		"unknown config key":      {args: []string{"--config", write("a.yaml", "mode: strict\nallowNamespace: [x]\n")}, code: 1, want: `unknown key \"allowNamespace\"`},
		"non-loopback metrics":    {args: []string{"--metrics-address", "0.0.0.0:9464"}, code: 1, want: "is not a loopback address"},
		"metrics flag beats file": {args: []string{"--config", write("b.yaml", "metricsAddress: 127.0.0.1:1\n"), "--metrics-address", "10.0.0.1:1"}, code: 1, want: "10.0.0.1:1"},
		"relative control socket": {args: []string{"--control-socket", "x.sock"}, code: 1, want: "controlSocket"},
		"bad mechanism":           {args: []string{"--mechanism", "uprobe", "--state-dir", dir}, code: 2, want: "want auto, fmod_ret or kprobe"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := runNRI(append([]string{"--log-file", "-"}, tc.args...), nil, io.Discard, &stderr)
			if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("exit %d (want %d), output lacks %q:\n%s", code, tc.code, tc.want, stderr.String())
			}
		})
	}
}
