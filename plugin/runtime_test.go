package plugin

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	apievents "github.com/containerd/containerd/api/events"
)

func TestRuntimeShortName(t *testing.T) {
	for in, want := range map[string]string{
		"io.containerd.runc.v2":      "runc",
		"io.containerd.runsc.v1":     "runsc",
		"io.containerd.kata-qemu.v2": "kata-qemu",
		"io.containerd.kata.v2":      "kata",
		"io.containerd.foo":          "foo",
		"runsc":                      "runsc",
		"kata-fc":                    "kata-fc",
		"":                           "",
	} {
		if got := runtimeShortName(in); got != want {
			t.Errorf("runtimeShortName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRuntimeAllowed(t *testing.T) {
	def := DefaultConfig()
	for rt, refused := range map[string]bool{
		"": false, "runc": false, "crun": false, "io.containerd.runc.v2": false, "youki": false,
		"runsc": true, "gvisor": true, "io.containerd.runsc.v1": true,
		"kata": true, "kata-qemu": true, "kata-fc": true, "io.containerd.kata-clh.v2": true,
	} {
		err := def.RuntimeAllowed(rt)
		if (err != nil) != refused {
			t.Errorf("RuntimeAllowed(%q) = %v, want refused %v", rt, err, refused)
		}
		if err != nil && (!strings.Contains(err.Error(), "sandboxRuntimes") || !strings.Contains(err.Error(), rt)) {
			t.Errorf("RuntimeAllowed(%q): %q names neither the runtime nor the setting", rt, err)
		}
	}
	c, err := Resolve(Config{SandboxRuntimes: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RuntimeAllowed("runsc"); err != nil {
		t.Errorf("sandboxRuntimes: [] still refuses runsc: %v", err)
	}
	c, err = Resolve(Config{SandboxRuntimes: []string{"my-vm*"}})
	if err != nil {
		t.Fatal(err)
	}
	if c.RuntimeAllowed("my-vm-fast") == nil || c.RuntimeAllowed("runsc") != nil {
		t.Errorf("sandboxRuntimes: [my-vm*] replaces the default list: %v", c.SandboxRuntimes)
	}
	if _, err := Resolve(Config{SandboxRuntimes: []string{"kata["}}); err == nil || !strings.Contains(err.Error(), "sandboxRuntimes[0]") {
		t.Errorf("a bad pattern: %v", err)
	}
	if _, err := ParseConfig([]byte("sandboxRuntimes: [runsc, kata*]")); err != nil {
		t.Errorf("ParseConfig: %v", err)
	}
}

// A pod whose runtime handler is a sandbox is refused: strict mode fails its container's
// creation with the runtime and the setting named, and nothing is armed; lenient mode logs and
// runs it without the fault. A runc pod next to it is armed.
func TestNRISandboxRuntimeRefused(t *testing.T) {
	for _, mode := range []Mode{Strict, Lenient} {
		t.Run(string(mode), func(t *testing.T) {
			h := newHarness(t)
			tp := h.startPlugin("mode: " + string(mode))
			ann := map[string]string{"faults.kfault.dev/pod": `{failtype: 0}`}
			sandboxed := pod("default", "gv", ann)
			sandboxed.RuntimeHandler = "runsc"
			plain := pod("default", "plain", ann)
			plain.RuntimeHandler = "runc"
			sc, _ := h.container(sandboxed, "app")
			pc, _ := h.container(plain, "app")

			err := h.rt.create(sandboxed, sc)
			if mode == Strict {
				if err == nil || !strings.Contains(err.Error(), `runtime "runsc" is a sandbox`) || !strings.Contains(err.Error(), "sandboxRuntimes") {
					t.Fatalf("create in a runsc pod: %v, want the sandbox refusal", err)
				}
			} else {
				if err != nil {
					t.Fatalf("lenient create in a runsc pod: %v", err)
				}
				if err := h.rt.startCtr(sandboxed, sc); err != nil {
					t.Fatalf("lenient start in a runsc pod: %v", err)
				}
			}
			if rl := tp.logLines("rejected"); len(rl) == 0 || !strings.Contains(rl[0]["error"].(string), "runsc") {
				t.Errorf("rejected log lines: %v", rl)
			}
			if err := h.rt.create(plain, pc); err != nil {
				t.Fatal(err)
			}
			if err := h.rt.startCtr(plain, pc); err != nil {
				t.Fatal(err)
			}
			if got := tp.eng.armedKeys(); !slices.Equal(got, []string{pc.Id}) {
				t.Errorf("armed %v, want only the runc pod's %s", got, pc.Id)
			}
		})
	}
}

// The containerd event path refuses a container whose runtime is a sandbox (containerd's
// runtime name, io.containerd.kata.v2) and arms one on runc.
func TestEventSandboxRuntimeRefused(t *testing.T) {
	u := newTestPlugin(t, "")
	src := &fakeSource{}
	kpid := src.add(t, u, "default", "vm1", "vm", `{failtype: 0}`)
	rpid := src.add(t, u, "default", "ct1", "ct", `{failtype: 0}`)
	src.mu.Lock()
	k := src.containers["default/vm1"]
	k.Runtime = "io.containerd.kata.v2"
	src.containers["default/vm1"] = k
	r := src.containers["default/ct1"]
	r.Runtime = "io.containerd.runc.v2"
	src.containers["default/ct1"] = r
	src.mu.Unlock()
	h := NewEventHandler(u.Plugin, src)
	h.Handle(context.Background(), "default", &apievents.TaskCreate{ContainerID: "vm1", Pid: kpid}, time.Time{})
	h.Handle(context.Background(), "default", &apievents.TaskCreate{ContainerID: "ct1", Pid: rpid}, time.Time{})
	if got := u.eng.armedKeys(); !slices.Equal(got, []string{"default/ct1"}) {
		t.Errorf("armed %v, want only default/ct1", got)
	}
	if !strings.Contains(u.logs.String(), `runtime \"io.containerd.kata.v2\" is a sandbox`) {
		t.Errorf("no refusal naming the kata runtime in the log:\n%s", u.logs)
	}
}
