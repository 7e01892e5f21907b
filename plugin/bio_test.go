package plugin

import (
	"slices"
	"strings"
	"testing"

	"github.com/kfault/kfault/bpf"
)

// TestProtectDevices: Configure hands the engine the devices of bio.protectPaths (missing
// paths skipped, with a warning), stateDir's, and bio.protectDevices; a bad device fails it.
func TestProtectDevices(t *testing.T) {
	u := newTestPlugin(t, `bio: {protectPaths: [/kfault-no-such-path], protectDevices: ["7:3", "259:0"]}`)
	u.eng.mu.Lock()
	got := slices.Clone(u.eng.protected)
	u.eng.mu.Unlock()
	for _, want := range []bpf.Dev{bpf.MakeDev(7, 3), bpf.MakeDev(259, 0)} {
		if !slices.Contains(got, want) {
			t.Errorf("protected %v, want %s in it", got, want)
		}
	}
	state, anonymous, err := bpf.PathDevice(u.cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	if !anonymous && !slices.Contains(got, state) {
		t.Errorf("protected %v, want stateDir's device %s in it", got, state)
	}
	if !strings.Contains(u.logs.String(), "/kfault-no-such-path") {
		t.Errorf("no warning for the missing path: %s", u.logs.String())
	}
	if err := u.applyConfig(`bio: {protectDevices: [/dev/null]}`); err == nil || !strings.Contains(err.Error(), "bio.protectDevices[0]: /dev/null: not a block device") {
		t.Errorf("a character device in protectDevices: %v", err)
	}
}
