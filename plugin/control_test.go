package plugin

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kfault/kfault/annotations"
)

func TestControlSocket(t *testing.T) {
	u := newTestPlugin(t, "")
	u.armForTest(t, "c1", ident{SourceNRI, "default", "web", "app", "c1"}, `{failtype: 0, times: 10}`)
	u.armForTest(t, "default/n1", ident{SourceContainerd, "default", "", "n1", "n1"}, `{function: __x64_sys_openat, errno: EACCES}`)
	u.eng.inject(t, "c1", 0, 4)

	dir, err := os.MkdirTemp("", "kfc-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "run", "control.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := u.ServeControl(ctx, sock); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if fi, _ := os.Stat(filepath.Dir(sock)); fi.Mode().Perm() != 0o700 {
		t.Errorf("socket dir mode %v, want 0700", fi.Mode().Perm())
	}
	c := NewControlClient(sock)

	st, err := c.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Halted || len(st.Containers) != 2 {
		t.Fatalf("status %+v", st)
	}
	c1 := st.Containers[0]
	if c1.Key != "c1" || !c1.Armed || !slices.Equal(c1.Injected, []uint64{4}) || c1.Pod != "web" ||
		len(c1.FaultList) != 1 || !strings.Contains(c1.FaultList[0], "should_failslab") {
		t.Errorf("c1 status %+v", c1)
	}

	tests := []struct { // ordered: each step builds on the previous
		name      string
		req       DisarmRequest
		wantErr   string
		wantArmed []string
		halted    bool
	}{
		{name: "one key", req: DisarmRequest{Key: "default/n1"}, wantArmed: []string{"c1"}},
		{name: "unknown key", req: DisarmRequest{Key: "nope"}, wantErr: `no container "nope"`, wantArmed: []string{"c1"}},
		{name: "empty request", req: DisarmRequest{}, wantErr: "say all, key or resume", wantArmed: []string{"c1"}},
		{name: "all", req: DisarmRequest{All: true}, halted: true},
		{name: "resume", req: DisarmRequest{Resume: true}},
	}
	for _, tc := range tests {
		reply, err := c.Disarm(tc.req)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: error %v, want %q", tc.name, err, tc.wantErr)
			}
		} else if err != nil {
			t.Errorf("%s: %v", tc.name, err)
		} else if reply.Halted != tc.halted {
			t.Errorf("%s: halted %v", tc.name, reply.Halted)
		}
		if got := u.eng.armedKeys(); !slices.Equal(got, tc.wantArmed) {
			t.Errorf("%s: armed %v, want %v", tc.name, got, tc.wantArmed)
		}
	}

	// The emergency stop also detaches the programs kept idle: nothing of kfault's stays attached.
	if u.eng.releasedIdle != 1 {
		t.Errorf("disarm --all called the engine's ReleaseIdle %d times, want once", u.eng.releasedIdle)
	}

	// A user-disarmed container is not re-armed by a synchronization.
	u.armForTest(t, "default/n1", ident{SourceContainerd, "default", "", "n1", "n1"}, `{function: __x64_sys_openat, errno: EACCES}`)
	if slices.Contains(u.eng.armedKeys(), "default/n1") {
		t.Error("user-disarmed container re-armed")
	}
	// While halted, nothing is armed; the halt survives a restart (state file).
	u.Halt("test")
	u.armForTest(t, "c2", ident{SourceNRI, "default", "web", "b", "c2"}, `{failtype: 1}`)
	if len(u.eng.armedKeys()) != 0 {
		t.Errorf("armed while halted: %v", u.eng.armedKeys())
	}
	s2, err := OpenStore(u.Config().StateDir)
	if err != nil || !s2.Halted() {
		t.Errorf("halt not persisted: %v", err)
	}
}

func TestHeadersNotedOnce(t *testing.T) {
	u := newTestPlugin(t, "")
	for i := range 3 {
		key := fmt.Sprintf("c%d", i)
		u.armForTest(t, key, ident{SourceNRI, "default", "web", "app", key}, `{failtype: 0, headers: ["linux/mmzone.h"]}`)
		if _, _, err := u.admit(ident{SourceNRI, "default", "web", "app", key}, "faults.kfault.dev/pod", `{failtype: 0, headers: ["linux/mmzone.h"]}`, annotations.Target{UID: "uid-web", Name: "web"}); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(u.logs.String(), "headers field is accepted for KernelChaos compatibility"); n != 1 {
		t.Errorf("noted %d times, want once", n)
	}
	// The pod's author writes the headers: the log gives their count, never their text.
	if logs := u.logs.String(); strings.Contains(logs, "mmzone") || !strings.Contains(logs, `"headers":1`) {
		t.Errorf("headers logged as other than their count:\n%s", logs)
	}
}

// The control socket serves the Go runtime's heap profile (make bench reads it at node scale).
func TestControlHeapProfile(t *testing.T) {
	u := newTestPlugin(t, "")
	rec := httptest.NewRecorder()
	u.ControlHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/debug/pprof/heap", nil))
	if rec.Code != http.StatusOK || rec.Body.Len() == 0 {
		t.Errorf("GET /debug/pprof/heap: %d, %d bytes", rec.Code, rec.Body.Len())
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/octet-stream" {
		t.Errorf("GET /debug/pprof/heap: Content-Type %q, want a profile", ct)
	}
}
