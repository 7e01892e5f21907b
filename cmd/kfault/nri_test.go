package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kfault/kfault/bpf"
	"github.com/kfault/kfault/plugin"
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

// TestAdaptInjections checks that every field the plugin shows survives the conversion and
// that the plugin's channel closes when the engine's does.
func TestAdaptInjections(t *testing.T) {
	in := make(chan bpf.Injection, 2)
	at := time.Unix(1700000000, 5).UTC()
	in <- bpf.Injection{Key: "k8s.io/abc", Fault: 2, Function: "should_failslab", Seq: 1024, PID: 7, TGID: 6, Comm: "app", Retval: -12, Time: at}
	close(in)
	out := adaptInjections(in)
	got, ok := <-out
	want := plugin.Injection{Key: "k8s.io/abc", Fault: 2, Seq: 1024, PID: 7, TGID: 6, Comm: "app", Time: at}
	if !ok || got != want {
		t.Errorf("got %+v (ok %v), want %+v", got, ok, want)
	}
	if _, ok := <-out; ok {
		t.Error("the plugin's channel stays open after the engine's closed")
	}
	if adaptInjections(nil) != nil {
		t.Error("an engine without samples must give the plugin no channel")
	}
}
