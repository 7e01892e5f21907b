package plugin

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"

	"github.com/kfault/kfault/bpf"
)

// TestMain doubles as a pre-registered NRI plugin: when the runtime launches this test
// binary as /opt/nri/plugins/10-kfault (TestNRILaunchedByRuntime), it runs kfault's
// plugin on the inherited connection, with a fake engine.
func TestMain(m *testing.M) {
	if os.Getenv(api.PluginSocketEnvVar) != "" {
		os.Exit(launchedPluginMain())
	}
	os.Exit(m.Run())
}

// launchedTarget is the cgroup every container gets in the launched plugin.
var launchedTarget = bpf.Target{Path: "/sys/fs/cgroup/launched", ID: 4242, Level: 1}

func launchedPluginMain() int {
	p, err := New(Options{
		Engine:   newFakeEngine(),
		Resolver: fixedResolver{launchedTarget},
		Logger:   testLogger(os.Stderr), // the runtime discards it
	})
	if err != nil {
		return 1
	}
	if err := p.Run(context.Background(), RunOptions{}); err != nil {
		return 1 // connection lost: the runtime launches a new instance
	}
	return 0
}

func TestNRILaunchedByRuntime(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "kfl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	rt := newTestRuntime(t, dir)
	stateDir := filepath.Join(dir, "state")

	// Pre-registration: the binary as plugins/10-kfault, its config in conf.d.
	for _, d := range []string{rt.plugs, rt.confD} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(exe, filepath.Join(rt.plugs, "10-kfault")); err != nil {
		t.Fatal(err)
	}
	conf := "mode: strict\nstateDir: " + stateDir + "\nallowedNamespaces: [\"*\"]\ndeniedNamespaces: [prod]\ncontrolSocket: off\nevents: {enabled: false}\n"
	if err := os.WriteFile(filepath.Join(rt.confD, "10-kfault.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	rt.start() // launches, registers, configures and synchronizes the plugin

	// The conf.d config is in force: prod is denied (the default would allow it).
	prod := pod("prod", "web", map[string]string{"faults.kfault.dev/pod": slabFault})
	c1 := &api.Container{Id: "c1", PodSandboxId: prod.Id, Name: "app", Pid: 10}
	if err := rt.create(prod, c1); err == nil || !strings.Contains(err.Error(), `namespace "prod" is denied`) {
		t.Fatalf("create in prod: %v", err)
	}

	// A container in an allowed namespace gets armed; the state file says so.
	web := pod("default", "web", map[string]string{"faults.kfault.dev/pod": slabFault})
	c2 := &api.Container{Id: "c2", PodSandboxId: web.Id, Name: "app", Pid: 11}
	if err := rt.create(web, c2); err != nil {
		t.Fatal(err)
	}
	if err := rt.startCtr(web, c2); err != nil {
		t.Fatal(err)
	}
	// The plugin is another process, which saves in the background: read the state file
	// until it has the entry (a poll of another process's file; the deadline only catches a
	// plugin that never writes it).
	h := &harness{t: t, stateDir: stateDir}
	var e Entry
	for deadline := time.Now().Add(syncTimeout); ; time.Sleep(10 * time.Millisecond) {
		var ok bool
		if _, err := os.Stat(filepath.Join(stateDir, StateFileName)); err == nil {
			e, ok = h.readState()["c2"]
		}
		if ok || time.Now().After(deadline) {
			break
		}
	}
	if !e.Armed || e.CgroupID != launchedTarget.ID || e.Mechanism != "fmod_ret" || e.Namespace != "default" {
		t.Fatalf("state entry %+v", e)
	}

	// A bad annotation is refused with the field named, through the launched plugin.
	bad := pod("default", "bad", map[string]string{"faults.kfault.dev/pod": `{failtype: 0, times: -1}`})
	c3 := &api.Container{Id: "c3", PodSandboxId: bad.Id, Name: "app", Pid: 12}
	if err := rt.create(bad, c3); err == nil || !strings.Contains(err.Error(), "times:") {
		t.Fatalf("bad annotation: %v", err)
	}

	// The runtime going away ends the launched instance (a restarted runtime launches
	// a new one); the stop kills it here, so just make sure nothing hangs.
	done := make(chan struct{})
	go func() { rt.stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(syncTimeout):
		t.Fatal("runtime stop hung")
	}
}

// fixedResolver puts every container in one cgroup.
type fixedResolver struct{ t bpf.Target }

func (r fixedResolver) FromPID(int) (bpf.Target, error)            { return r.t, nil }
func (r fixedResolver) FromCgroupsPath(string) (bpf.Target, error) { return r.t, nil }
