package plugin

import (
	"testing"
)

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
