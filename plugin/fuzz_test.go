package plugin

import (
	"path/filepath"
	"strings"
	"testing"
)

// FuzzExpandCgroupsPath: whatever the runtime sends, the expansion stays strictly below
// the cgroup root (never the root itself: arming there would fault the whole node).
func FuzzExpandCgroupsPath(f *testing.F) {
	for _, s := range []string{
		"kubepods-burstable-podX.slice:cri-containerd:ID", ":nerdctl:abc", "-.slice:p:x",
		"/kubepods/burstable/pod/ID", "default/abc", "/../..", "a.slice:p:../../..", "a.slice:p:..",
		"..", ".", "/", "a:b:c:d", "-.slice:p:.slice",
	} {
		f.Add(s)
	}
	const root = "/sys/fs/cgroup"
	f.Fuzz(func(t *testing.T, in string) {
		out, err := ExpandCgroupsPath(root, in)
		if err != nil {
			return
		}
		rel, rerr := filepath.Rel(root, out)
		if rerr != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
			t.Fatalf("ExpandCgroupsPath(%q) = %q: not strictly below %s", in, out, root)
		}
	})
}

// FuzzParseConfig: no panics, and whatever parses and resolves validates.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{"", "mode: lenient", "allowedNamespaces: [a]\ndeniedNamespaces: []",
		"events: {enabled: false, skipNamespaces: [x]}", "metricsAddress: 127.0.0.1:1", "{", "- a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		c, err := ParseConfig([]byte(in))
		if err != nil {
			return
		}
		r, err := Resolve(c)
		if err != nil {
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("resolved config does not validate: %v", err)
		}
	})
}
