package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestHelp runs every subcommand of the table with -h and --help: each prints its usage
// on standard error, nothing on standard output, and exits 0.
func TestHelp(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range commands {
		if seen[c.name] {
			t.Errorf("command %q is listed twice", c.name)
		}
		seen[c.name] = true
		for _, arg := range []string{"-h", "--help"} {
			t.Run(c.name+" "+arg, func(t *testing.T) {
				var stdout, stderr bytes.Buffer
				code := c.run([]string{arg}, strings.NewReader(""), &stdout, &stderr)
				if code != 0 {
					t.Errorf("kfault %s %s: exit %d, want 0\n%s", c.name, arg, code, &stderr)
				}
				if want := "usage: kfault " + c.name; !strings.Contains(stderr.String(), want) {
					t.Errorf("kfault %s %s: standard error lacks %q:\n%s", c.name, arg, want, &stderr)
				}
				if stdout.Len() != 0 {
					t.Errorf("kfault %s %s: help on standard output:\n%s", c.name, arg, &stdout)
				}
			})
		}
	}
}

func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := runVersion(nil, nil, &stdout, &stderr); code != 0 || !strings.HasPrefix(stdout.String(), "kfault ") {
		t.Errorf("kfault version: exit %d, output %q %q", code, &stdout, &stderr)
	}
	stdout.Reset()
	if code := runVersion([]string{"extra"}, nil, &stdout, &stderr); code != 2 || stdout.Len() != 0 {
		t.Errorf("kfault version extra: exit %d (want 2), output %q", code, &stdout)
	}
}
