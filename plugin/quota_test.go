package plugin

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/nri/pkg/api"

	"github.com/kfault/kfault/bpf"
)

// TestQuotaConfig: the quotas key parses, layers field by field, and refuses what cannot be
// meant, naming the key.
func TestQuotaConfig(t *testing.T) {
	type limit struct {
		ns, resource string
		value        int
		key          string
	}
	for name, tc := range map[string]struct {
		file, nri string
		wantErr   string // substring; "" = no error
		want      []limit
	}{
		"defaults: a quarter of each capacity": {
			want: []limit{
				{"any", "containers", bpf.MaxRules / 4 / 16, "quotas.default.containers"},
				{"any", "hooks", bpf.MaxHooks / 4, "quotas.default.hooks"},
				{"any", "chains", bpf.MaxChains / 4, "quotas.default.chains"},
				{"any", "frames", bpf.MaxFrames / 4, "quotas.default.frames"},
			},
		},
		"the documented numbers": {
			want: []limit{{"a", "containers", 256, "quotas.default.containers"}, {"a", "hooks", 16, "quotas.default.hooks"},
				{"a", "chains", 63, "quotas.default.chains"}, {"a", "frames", 8, "quotas.default.frames"}},
		},
		"a namespace overrides some fields": {
			file: "quotas: {default: {frames: 4}, namespaces: {team-a: {containers: 200}}}",
			want: []limit{
				{"team-a", "containers", 200, "quotas.namespaces.team-a.containers"},
				{"team-a", "frames", 4, "quotas.default.frames"},
				{"team-a", "chains", 63, "quotas.default.chains"},
				{"team-b", "containers", 256, "quotas.default.containers"},
				{"team-b", "frames", 4, "quotas.default.frames"},
			},
		},
		"layers merge field by field": {
			file: "quotas: {default: {chains: 10}, namespaces: {a: {containers: 5}, b: {frames: 1}}}",
			nri:  "quotas: {default: {frames: 2}, namespaces: {a: {frames: 3}}}",
			want: []limit{
				{"a", "containers", 5, "quotas.namespaces.a.containers"},
				{"a", "frames", 3, "quotas.namespaces.a.frames"},
				{"b", "frames", 1, "quotas.namespaces.b.frames"},
				{"c", "frames", 2, "quotas.default.frames"},
				{"c", "chains", 10, "quotas.default.chains"},
			},
		},
		"zero allows none": {
			nri:  "quotas: {namespaces: {a: {frames: 0}}}",
			want: []limit{{"a", "frames", 0, "quotas.namespaces.a.frames"}},
		},
		"the capacity itself": {
			nri:  fmt.Sprintf("quotas: {default: {containers: %d, hooks: %d, chains: %d, frames: %d}}", bpf.MaxRules, bpf.MaxHooks, bpf.MaxChains, bpf.MaxFrames),
			want: []limit{{"a", "frames", 32, "quotas.default.frames"}, {"a", "chains", 255, "quotas.default.chains"}},
		},
		"negative default": {
			nri:     "quotas: {default: {frames: -1}}",
			wantErr: "node config: quotas.default.frames: -1 is negative (0 allows none)",
		},
		"negative in a namespace": {
			file:    "quotas: {namespaces: {team-a: {chains: -2}}}",
			wantErr: "node config: quotas.namespaces.team-a.chains: -2 is negative",
		},
		"above the capacity": {
			nri:     "quotas: {namespaces: {team-a: {frames: 33}}}",
			wantErr: "node config: quotas.namespaces.team-a.frames: 33 is above the engine's capacity of 32 distinct call-chain frames on the node; at most 32",
		},
		"containers above the rules": {
			nri:     "quotas: {default: {containers: 20000}}",
			wantErr: "quotas.default.containers: 20000 is above the engine's capacity of 16384",
		},
		"unknown key under quotas": {
			nri:     "quotas: {namespace: {a: {frames: 1}}}",
			wantErr: `unknown key "quotas.namespace" (known keys: default, namespaces)`,
		},
		"unknown key in the default": {
			nri:     "quotas: {default: {frame: 1}}",
			wantErr: `unknown key "quotas.default.frame" (known keys: containers, hooks, chains, frames)`,
		},
		"unknown key in a namespace": {
			file:    "quotas:\n  namespaces:\n    team-a: {containers: 1}\n    team-b: {pods: 2}\n",
			wantErr: `unknown key "quotas.namespaces.team-b.pods" (known keys: containers, hooks, chains, frames)`,
		},
		"star is not a namespace": {
			nri:     `quotas: {namespaces: {"*": {frames: 1}}}`,
			wantErr: `quotas.namespaces: "*": use quotas.default for every namespace`,
		},
		"not a number": {
			nri:     "quotas: {default: {frames: many}}",
			wantErr: "frames",
		},
	} {
		t.Run(name, func(t *testing.T) {
			var c Config
			file, err := ParseConfig([]byte(tc.file))
			if err == nil {
				var nri Config
				if nri, err = ParseConfig([]byte(tc.nri)); err == nil {
					c, err = Resolve(file, nri)
				}
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				i := slices.IndexFunc(quotaResources, func(r quotaResource) bool { return r.name == w.resource })
				v, key := c.Quotas.limit(w.ns, quotaResources[i])
				if v != w.value || key != w.key {
					t.Errorf("%s %s: %d (%s), want %d (%s)", w.ns, w.resource, v, key, w.value, w.key)
				}
			}
		})
	}
}

func TestQuotaErrorText(t *testing.T) {
	for name, tc := range map[string]struct {
		err  QuotaError
		want string
	}{
		"at the quota": {
			QuotaError{Namespace: "team-a", Resource: "frames", Quota: 8, Key: "quotas.default.frames", InUse: 8, Needs: 2},
			`namespace "team-a" is at its quota of 8 frames (quotas.default.frames; in use: 8, this container needs 2 more): raise quotas.namespaces.team-a.frames in the node config`,
		},
		"would exceed it": {
			QuotaError{Namespace: "team-a", Resource: "chains", Quota: 3, Key: "quotas.namespaces.team-a.chains", InUse: 2, Needs: 2},
			`namespace "team-a" would exceed its quota of 3 chains (quotas.namespaces.team-a.chains; in use: 2, this container needs 2 more): raise quotas.namespaces.team-a.chains in the node config`,
		},
		"one container": {
			QuotaError{Namespace: "q", Resource: "containers", Quota: 1, Key: "quotas.namespaces.q.containers", InUse: 1, Needs: 1},
			`namespace "q" is at its quota of 1 container (quotas.namespaces.q.containers; in use: 1, this container needs 1 more): raise quotas.namespaces.q.containers in the node config`,
		},
	} {
		t.Run(name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// Faults for the quota tests: the mkdir fault with call chains over frames f1..f4.
func chainFault(frames ...string) string {
	var chain []string
	for _, f := range frames {
		chain = append(chain, "{funcname: "+f+"}")
	}
	return "{function: __x64_sys_mkdir, errno: EACCES, callchain: [" + strings.Join(chain, ", ") + "]}"
}

// TestNRIQuota: a namespace over a quota is refused at creation (strict), naming the quota,
// while other namespaces' faults keep working; what a namespace shares costs nothing more.
func TestNRIQuota(t *testing.T) {
	type ctr struct {
		ns, name, fault string
		wantErr         string // "" = created, started and armed
	}
	const slab = `{failtype: 0}`
	for name, tc := range map[string]struct {
		config string
		ctrs   []ctr
	}{
		"containers: one namespace full, the other works": {
			config: "quotas: {namespaces: {team-a: {containers: 1}}}",
			ctrs: []ctr{
				{"team-a", "a1", slab, ""},
				{"team-a", "a2", slab, `kfault: namespace "team-a" is at its quota of 1 container (quotas.namespaces.team-a.containers; in use: 1, this container needs 1 more): raise quotas.namespaces.team-a.containers in the node config`},
				{"team-b", "b1", slab, ""},
				{"team-b", "b2", slab, ""},
			},
		},
		"frames: shared frames cost nothing, new ones are refused": {
			config: "quotas: {default: {frames: 2}}",
			ctrs: []ctr{
				{"team-a", "a1", chainFault("f1", "f2"), ""},
				{"team-a", "a2", chainFault("f2", "f1"), ""}, // a new chain over the same frames
				{"team-a", "a3", chainFault("f1", "f3"), `kfault: namespace "team-a" is at its quota of 2 frames (quotas.default.frames; in use: 2, this container needs 1 more): raise quotas.namespaces.team-a.frames in the node config`},
				{"team-a", "a4", slab, ""},
				{"team-b", "b1", chainFault("f3", "f4"), ""},
			},
		},
		"chains": {
			config: "quotas: {namespaces: {team-a: {chains: 1}}}",
			ctrs: []ctr{
				{"team-a", "a1", chainFault("f1"), ""},
				{"team-a", "a2", chainFault("f1"), ""},
				{"team-a", "a3", chainFault("f2", "f1"), `namespace "team-a" is at its quota of 1 chain (quotas.namespaces.team-a.chains; in use: 1, this container needs 1 more)`},
				{"team-b", "b1", chainFault("f2", "f1"), ""},
			},
		},
		"hooks": {
			config: "quotas: {default: {hooks: 1}}",
			ctrs: []ctr{
				{"team-a", "a1", slab, ""},
				{"team-a", "a2", `[{failtype: 0}, {failtype: 1}]`, `namespace "team-a" is at its quota of 1 hook (quotas.default.hooks; in use: 1, this container needs 1 more)`},
				{"team-b", "b1", `{failtype: 1}`, ""},
			},
		},
		"frames: 0 refuses call chains only": {
			config: "quotas: {namespaces: {team-a: {frames: 0}}}",
			ctrs: []ctr{
				{"team-a", "a1", chainFault("f1"), `namespace "team-a" is at its quota of 0 frames (quotas.namespaces.team-a.frames; in use: 0, this container needs 1 more)`},
				{"team-a", "a2", slab, ""},
			},
		},
		"one container beyond several quotas: the first is named": {
			config: "quotas: {default: {containers: 1, frames: 1}}",
			ctrs: []ctr{
				{"team-a", "a1", chainFault("f1"), ""},
				{"team-a", "a2", chainFault("f2"), "quota of 1 container (quotas.default.containers"},
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			tp := h.startPlugin(tc.config)
			var wantArmed []string
			for _, c := range tc.ctrs {
				p := pod(c.ns, c.name, map[string]string{"faults.kfault.dev/pod": c.fault})
				ct, _ := h.container(p, "app")
				err := h.rt.create(p, ct)
				if c.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), c.wantErr) {
						t.Fatalf("%s/%s: create error %v, want %q", c.ns, c.name, err, c.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s/%s: %v", c.ns, c.name, err)
				}
				if err := h.rt.startCtr(p, ct); err != nil {
					t.Fatalf("%s/%s: start: %v", c.ns, c.name, err)
				}
				wantArmed = append(wantArmed, ct.Id)
			}
			slices.Sort(wantArmed)
			if got := tp.eng.armedKeys(); !slices.Equal(got, wantArmed) {
				t.Fatalf("armed %v, want %v", got, wantArmed)
			}
			for _, l := range tp.logLines("rejected") {
				if l["phase"] != "create" || !strings.Contains(fmt.Sprint(l["error"]), "quota") {
					t.Errorf("rejected line %v", l)
				}
			}
		})
	}
}

// TestNRIQuotaAtStart: creation only looks at what is armed then; the start, under the lock,
// decides. Stopping a container frees its share; an unannotated bystander is never involved.
func TestNRIQuotaAtStart(t *testing.T) {
	h := newHarness(t)
	tp := h.startPlugin("quotas: {namespaces: {team-a: {containers: 1}}}")
	ann := map[string]string{"faults.kfault.dev/pod": `{failtype: 0}`}
	p1, p2 := pod("team-a", "one", ann), pod("team-a", "two", ann)
	c1, _ := h.container(p1, "app")
	c2, _ := h.container(p2, "app")
	bystander := pod("team-a", "plain", nil)
	c3, _ := h.container(bystander, "app")
	for _, c := range []struct {
		p *api.PodSandbox
		c *api.Container
	}{{p1, c1}, {p2, c2}, {bystander, c3}} {
		if err := h.rt.create(c.p, c.c); err != nil {
			t.Fatalf("create %s: %v", c.c.Id, err)
		}
	}
	if err := h.rt.startCtr(p1, c1); err != nil {
		t.Fatal(err)
	}
	err := h.rt.startCtr(p2, c2)
	if err == nil || !strings.Contains(err.Error(), `kfault: namespace "team-a" is at its quota of 1 container (quotas.namespaces.team-a.containers; in use: 1, this container needs 1 more)`) {
		t.Fatalf("second start: %v", err)
	}
	if err := h.rt.startCtr(bystander, c3); err != nil {
		t.Fatalf("bystander: %v", err)
	}
	if got := tp.eng.armedKeys(); !slices.Equal(got, []string{c1.Id}) {
		t.Fatalf("armed %v", got)
	}
	if rl := tp.logLines("rejected"); len(rl) != 1 || rl[0]["phase"] != "start" || rl[0]["pod"] != "two" {
		t.Fatalf("rejected lines %v", rl)
	}

	// Disarming frees the quota: a new container of team-a gets its fault.
	if err := h.rt.stopCtr(p1, c1); err != nil {
		t.Fatal(err)
	}
	p4 := pod("team-a", "four", ann)
	c4, _ := h.container(p4, "app")
	if err := h.rt.create(p4, c4); err != nil {
		t.Fatalf("after the stop: %v", err)
	}
	if err := h.rt.startCtr(p4, c4); err != nil {
		t.Fatalf("after the stop: %v", err)
	}
	if got := tp.eng.armedKeys(); !slices.Equal(got, []string{c4.Id}) {
		t.Fatalf("armed %v", got)
	}
}

// TestNRIQuotaLenient: over quota in lenient mode, the container runs without its fault, and
// one log line (at the start, which decides) says why.
func TestNRIQuotaLenient(t *testing.T) {
	h := newHarness(t)
	tp := h.startPlugin("mode: lenient\nquotas: {default: {containers: 1}}")
	ann := map[string]string{"faults.kfault.dev/pod": `{failtype: 0}`}
	var ids []string
	for _, name := range []string{"one", "two"} {
		p := pod("team-a", name, ann)
		c, _ := h.container(p, "app")
		if err := h.rt.create(p, c); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := h.rt.startCtr(p, c); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		ids = append(ids, c.Id)
	}
	if got := tp.eng.armedKeys(); !slices.Equal(got, ids[:1]) {
		t.Fatalf("armed %v, want %v", got, ids[:1])
	}
	rl := tp.logLines("rejected")
	if len(rl) != 1 || rl[0]["phase"] != "start" || rl[0]["mode"] != "lenient" ||
		!strings.Contains(fmt.Sprint(rl[0]["error"]), `is at its quota of 1 container (quotas.default.containers`) {
		t.Fatalf("rejected lines %v\n%s", rl, tp.logs)
	}
}

// TestQuotaRearm: arming a key again (a restart of the same container, a synchronization)
// replaces its usage; it does not count twice.
func TestQuotaRearm(t *testing.T) {
	u := newTestPlugin(t, "quotas: {default: {containers: 1, frames: 2}}")
	id := ident{Source: SourceNRI, Namespace: "team-a", Container: "app"}
	u.armForTest(t, "k1", id, chainFault("f1", "f2"))
	u.armForTest(t, "k1", id, chainFault("f1", "f2"))
	u.armForTest(t, "k1", id, chainFault("f3", "f4")) // replaces f1, f2
	plan, err := u.eng.Prepare(mustFaults(`{failtype: 0}`))
	if err != nil {
		t.Fatal(err)
	}
	err = u.arm(armRequest{key: "k2", id: id, plan: plan, pid: testPid})
	var qe *QuotaError
	if !errors.As(err, &qe) || qe.Resource != "containers" || qe.InUse != 1 {
		t.Fatalf("second key: %v", err)
	}
	// Another namespace is not affected.
	u.armForTest(t, "k3", ident{Source: SourceNRI, Namespace: "team-b", Container: "app"}, chainFault("f1", "f2"))
	u.disarm("k1", "test", true)
	u.armForTest(t, "k2", id, `{failtype: 0}`)
	if got := u.eng.armedKeys(); !slices.Equal(got, []string{"k2", "k3"}) {
		t.Fatalf("armed %v", got)
	}
}

// TestNRIQuotaSynchronize: after a plugin restart, synchronization re-arms running containers
// within the quotas (it cannot block the others: they run without their faults, logged).
func TestNRIQuotaSynchronize(t *testing.T) {
	h := newHarness(t)
	tp1 := h.startPlugin("")
	ann := map[string]string{"faults.kfault.dev/pod": `{failtype: 0}`}
	var ids []string
	for _, name := range []string{"one", "two"} {
		p := pod("team-a", name, ann)
		c, _ := h.container(p, "app")
		if err := h.rt.create(p, c); err != nil {
			t.Fatal(err)
		}
		if err := h.rt.startCtr(p, c); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, c.Id)
	}
	tp1.stop()
	// The admin lowers the quota to 1 container and restarts kfault.
	tp2 := h.startPlugin("quotas: {namespaces: {team-a: {containers: 1}}}")
	if got := tp2.eng.armedKeys(); len(got) != 1 {
		t.Fatalf("re-armed %v, want one of %v", got, ids)
	}
	rl := tp2.logLines("rejected")
	if len(rl) != 1 || rl[0]["phase"] != "synchronize" || !strings.Contains(fmt.Sprint(rl[0]["error"]), "quota of 1 container") {
		t.Fatalf("rejected lines %v", rl)
	}
}

// TestQuotaStatus: status lists each namespace with armed containers or its own quotas, with
// its usage and quotas; a disarm shows at once.
func TestQuotaStatus(t *testing.T) {
	u := newTestPlugin(t, "quotas: {namespaces: {idle: {frames: 1}}}")
	a := ident{Source: SourceNRI, Namespace: "team-a", Container: "app"}
	u.armForTest(t, "k1", a, chainFault("f1", "f2"))
	u.armForTest(t, "k2", a, chainFault("f2", "f1"))
	u.armForTest(t, "k3", ident{Source: SourceNRI, Namespace: "team-b", Container: "app"}, `{failtype: 0}`)
	show := func() string {
		var lines []string
		for _, q := range u.Status().Quotas {
			line := q.Namespace
			for _, r := range q.Resources {
				line += fmt.Sprintf(" %s=%d/%d", r.Resource, r.Used, r.Quota)
			}
			lines = append(lines, line)
		}
		return strings.Join(lines, "\n")
	}
	want := "idle containers=0/256 hooks=0/16 chains=0/63 frames=0/1\n" +
		"team-a containers=2/256 hooks=1/16 chains=2/63 frames=2/8\n" +
		"team-b containers=1/256 hooks=1/16 chains=0/63 frames=0/8"
	if got := show(); got != want {
		t.Fatalf("status quotas:\n%s\nwant\n%s", got, want)
	}
	u.disarm("k2", "test", true)
	if got := show(); !strings.Contains(got, "team-a containers=1/256 hooks=1/16 chains=1/63 frames=2/8") {
		t.Fatalf("after a disarm:\n%s", got)
	}
	if q := u.Status().Quotas[0].Resources[3]; q.Key != "quotas.namespaces.idle.frames" {
		t.Errorf("idle frames key %q", q.Key)
	}
}

// TestNRIQuotaNotSelected: a container whose select rules leave every fault out arms nothing,
// so a full namespace does not refuse it; one with a selected fault is refused.
func TestNRIQuotaNotSelected(t *testing.T) {
	h := newHarness(t)
	tp := h.startPlugin("quotas: {namespaces: {team-a: {containers: 1}}}")
	const value = `{failtype: 0, select: {ordinals: [0]}}`
	for _, c := range []struct {
		pod     string
		wantErr string
	}{{"db-0", ""}, {"db-1", ""}, {"db-2", ""}, {"db-0", "quota of 1 container"}} {
		p := pod("team-a", c.pod, map[string]string{"faults.kfault.dev/pod": value})
		ct, _ := h.container(p, "app")
		err := h.rt.create(p, ct)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("%s: create error %v, want %q", c.pod, err, c.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.pod, err)
		}
		if err := h.rt.startCtr(p, ct); err != nil {
			t.Fatalf("%s: start: %v", c.pod, err)
		}
	}
	if got := tp.eng.armedKeys(); len(got) != 1 {
		t.Fatalf("armed %v", got)
	}
	if n := len(tp.logLines("not selected")); n != 2 {
		t.Fatalf("%d not selected lines, want 2", n)
	}
}
