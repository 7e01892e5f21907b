package plugin

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/kfault/kfault/annotations"
)

func TestParseAndResolveConfig(t *testing.T) {
	tests := map[string]struct {
		file, nri, flags string
		wantErr          string // substring; "" = no error
		check            func(t *testing.T, c Config)
	}{
		"empty is all defaults": {
			check: func(t *testing.T, c Config) {
				if c.Mode != Strict || c.StateDir != DefaultStateDir || c.ContainerdSocket != DefaultContainerdSocket || c.MetricsAddress != "" {
					t.Errorf("defaults: %+v", c)
				}
				if !slices.Equal(c.DeniedNamespaces, []string{"kube-system"}) || c.AllowedNamespaces != nil {
					t.Errorf("namespaces: allowed %v denied %v", c.AllowedNamespaces, c.DeniedNamespaces)
				}
				if err := c.NamespaceAllowed("default"); !errors.Is(err, ErrNoNamespaceAllowed) {
					t.Errorf("the default config allows a namespace: %v", err)
				}
				if !c.EventsEnabled() || !slices.Equal(c.Events.SkipNamespaces, []string{"k8s.io"}) {
					t.Errorf("events: %+v", c.Events)
				}
			},
		},
		"unknown key": {
			nri:     "mode: strict\nallowNamespaces: [a]\n",
			wantErr: `unknown key "allowNamespaces" (known keys: allowedNamespaces, deniedNamespaces,`,
		},
		"unknown nested key": {
			file:    "events: {enable: false}",
			wantErr: `unknown key "events.enable" (known keys: enabled, skipNamespaces)`,
		},
		"bad mode": {
			nri:     "mode: relaxed",
			wantErr: `mode: "relaxed" is not strict or lenient`,
		},
		"json works too": {
			nri: `{"mode": "lenient", "stateDir": "/tmp/x"}`,
			check: func(t *testing.T, c Config) {
				if c.Mode != Lenient || c.StateDir != "/tmp/x" {
					t.Errorf("%+v", c)
				}
			},
		},
		"layers: flags beat NRI beat file": {
			file:  "mode: lenient\nstateDir: /file\ncontainerdSocket: /file.sock",
			nri:   "stateDir: /nri",
			flags: "mode: strict",
			check: func(t *testing.T, c Config) {
				if c.Mode != Strict || c.StateDir != "/nri" || c.ContainerdSocket != "/file.sock" {
					t.Errorf("%+v", c)
				}
			},
		},
		"allowed list drops the default deny": {
			nri: "allowedNamespaces: [kube-system, team-a]",
			check: func(t *testing.T, c Config) {
				if c.NamespaceAllowed("kube-system") != nil || c.NamespaceAllowed("team-b") == nil {
					t.Errorf("allowed %v denied %v", c.AllowedNamespaces, c.DeniedNamespaces)
				}
			},
		},
		"star keeps the default deny": {
			nri: `allowedNamespaces: ["*"]`,
			check: func(t *testing.T, c Config) {
				if c.NamespaceAllowed("team-b") != nil || c.NamespaceAllowed("kube-system") == nil {
					t.Errorf("allowed %v denied %v", c.AllowedNamespaces, c.DeniedNamespaces)
				}
			},
		},
		"star in the deny list": {
			nri:     `deniedNamespaces: ["*"]`,
			wantErr: `deniedNamespaces[0]: "*" means every namespace only in allowedNamespaces`,
		},
		"explicit empty deny list": {
			nri: "allowedNamespaces: [\"*\"]\ndeniedNamespaces: []",
			check: func(t *testing.T, c Config) {
				if c.NamespaceAllowed("kube-system") != nil {
					t.Errorf("kube-system should be allowed: %v", c.DeniedNamespaces)
				}
			},
		},
		"metrics on loopback": {
			nri: "metricsAddress: 127.0.0.1:9464",
			check: func(t *testing.T, c Config) {
				if c.MetricsAddress != "127.0.0.1:9464" {
					t.Errorf("%+v", c)
				}
			},
		},
		"metrics on localhost and ::1": {
			file: "metricsAddress: localhost:9464",
			nri:  "metricsAddress: '[::1]:9464'",
		},
		"metrics not on loopback": {
			nri:     "metricsAddress: 0.0.0.0:9464",
			wantErr: "metricsAddress: \"0.0.0.0:9464\" is not a loopback address",
		},
		"metrics not on loopback, overridden": {
			nri: "metricsAddress: 0.0.0.0:9464\nmetricsAllowNonLoopback: true",
		},
		"metrics without port": {
			nri:     "metricsAddress: 127.0.0.1",
			wantErr: "metricsAddress:",
		},
		"events disabled": {
			nri: "events: {enabled: false}",
			check: func(t *testing.T, c Config) {
				if c.EventsEnabled() {
					t.Error("events still enabled")
				}
			},
		},
		"control socket off, unquoted (YAML reads false)": {
			nri: "controlSocket: off",
			check: func(t *testing.T, c Config) {
				if !c.ControlDisabled() {
					t.Errorf("control socket %q not disabled", c.ControlSocket)
				}
			},
		},
		"control socket default": {
			check: func(t *testing.T, c Config) {
				if c.ControlDisabled() || c.ControlSocket != DefaultControlSocket {
					t.Errorf("control socket %q", c.ControlSocket)
				}
			},
		},
		"control socket relative": {
			nri:     "controlSocket: run/k.sock",
			wantErr: `controlSocket: "run/k.sock" is not an absolute path`,
		},
		"empty namespace name": {
			nri:     "deniedNamespaces: ['']",
			wantErr: "deniedNamespaces[0]: empty namespace name",
		},
		"predicates allowed by default": {
			check: func(t *testing.T, c Config) {
				if c.Predicates.Default != PredicatesAllow || c.PredicatesAllowed("default") != nil || c.PredicatesAllowed("kube-system") != nil {
					t.Errorf("predicates: %+v", c.Predicates)
				}
			},
		},
		"predicates switch": {
			file: "predicates: {default: deny, allow: [chaos], deny: [tenant-x]}",
			check: func(t *testing.T, c Config) {
				if c.PredicatesAllowed("chaos") != nil || c.PredicatesAllowed("other") == nil || c.PredicatesAllowed("tenant-x") == nil {
					t.Errorf("predicates: %+v", c.Predicates)
				}
			},
		},
		"predicates layers: each key replaces": {
			file: "predicates: {default: deny, allow: [chaos]}",
			nri:  "predicates: {deny: [tenant-x]}",
			check: func(t *testing.T, c Config) {
				want := PredicatesConfig{Default: PredicatesDeny, Allow: []string{"chaos"}, Deny: []string{"tenant-x"}}
				if c.Predicates.Default != want.Default || !slices.Equal(c.Predicates.Allow, want.Allow) || !slices.Equal(c.Predicates.Deny, want.Deny) {
					t.Errorf("predicates %+v, want %+v", c.Predicates, want)
				}
			},
		},
		"predicates: bad default": {
			nri:     "predicates: {default: maybe}",
			wantErr: `predicates.default: "maybe" is not allow or deny`,
		},
		"predicates: a bare word is not the shape": {
			nri:     "predicates: deny",
			wantErr: "node config: predicates: deny is not a map: write e.g. {default: deny, allow: [chaos-a]} or {deny: [tenant-x]}",
		},
		"predicates: unknown key": {
			nri:     "predicates: {denied: [a]}",
			wantErr: `unknown key "predicates.denied" (known keys: default, deny, allow)`,
		},
		"predicates: empty namespace name": {
			nri:     "predicates: {allow: [a, ' ']}",
			wantErr: "predicates.allow[1]: empty namespace name",
		},
		"frames: default deny list": {
			check: func(t *testing.T, c Config) {
				if !slices.Equal(c.Frames.Deny, DefaultDeniedFrames) || c.Frames.DenyExtra != nil {
					t.Errorf("frames: %+v", c.Frames)
				}
			},
		},
		"frames: denyExtra adds to the default list": {
			nri: "frames: {denyExtra: [my_fn, my_subsys_*]}",
			check: func(t *testing.T, c Config) {
				if !slices.Equal(c.Frames.Deny, DefaultDeniedFrames) || !slices.Equal(c.Frames.DenyExtra, []string{"my_fn", "my_subsys_*"}) {
					t.Errorf("frames: %+v", c.Frames)
				}
			},
		},
		"frames: deny replaces the default list, a later layer's denyExtra keeps it": {
			file: "frames: {deny: [schedule]}",
			nri:  "frames: {denyExtra: [x]}",
			check: func(t *testing.T, c Config) {
				if !slices.Equal(c.Frames.Deny, []string{"schedule"}) || !slices.Equal(c.Frames.DenyExtra, []string{"x"}) {
					t.Errorf("frames: %+v", c.Frames)
				}
			},
		},
		"frames: deny [] denies nothing": {
			nri: "frames: {deny: []}",
			check: func(t *testing.T, c Config) {
				if c.Frames.Deny == nil || len(c.Frames.Deny) != 0 || c.FrameAllowed("schedule") != nil {
					t.Errorf("frames: %+v", c.Frames)
				}
			},
		},
		"frames: not a map": {
			nri:     "frames: [schedule]",
			wantErr: "frames: [schedule] is not a map: write e.g. {denyExtra: [my_hot_function]}",
		},
		"frames: unknown key": {
			nri:     "frames: {extra: [a]}",
			wantErr: `unknown key "frames.extra" (known keys: deny, denyExtra)`,
		},
		"frames: star inside a pattern": {
			nri:     "frames: {denyExtra: [ok, 'a*b']}",
			wantErr: `frames.denyExtra[1]: "a*b" is not a function name or a prefix followed by *`,
		},
		"bio: default protected paths": {
			check: func(t *testing.T, c Config) {
				if !slices.Equal(c.Bio.ProtectPaths, DefaultProtectPaths) || c.Bio.ProtectDevices != nil {
					t.Errorf("bio: %+v", c.Bio)
				}
			},
		},
		"bio: protectPaths replaces, protectDevices adds": {
			file: "bio: {protectPaths: [/srv]}",
			nri:  `bio: {protectDevices: ["259:0", /dev/sdb]}`,
			check: func(t *testing.T, c Config) {
				if !slices.Equal(c.Bio.ProtectPaths, []string{"/srv"}) || !slices.Equal(c.Bio.ProtectDevices, []string{"259:0", "/dev/sdb"}) {
					t.Errorf("bio: %+v", c.Bio)
				}
			},
		},
		"bio: relative path": {
			nri:     "bio: {protectPaths: [/, var/lib]}",
			wantErr: `bio.protectPaths[1]: "var/lib" is not an absolute path`,
		},
		"bio: bad device": {
			nri:     `bio: {protectDevices: ["8:1", sda]}`,
			wantErr: `bio.protectDevices[1]: "sda": want a block device path under /dev`,
		},
		"bio: not a map": {
			nri:     "bio: [/]",
			wantErr: "bio: [/] is not a map: write e.g. {protectPaths:",
		},
		"frames: empty pattern": {
			nri:     "frames: {deny: ['']}",
			wantErr: `frames.deny[0]: "" is not a function name`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var layers []Config
			var err error
			for _, text := range []string{tc.file, tc.nri, tc.flags} {
				var c Config
				if c, err = ParseConfig([]byte(text)); err != nil {
					break
				}
				layers = append(layers, c)
			}
			var c Config
			if err == nil {
				c, err = Resolve(layers...)
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
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

func TestNamespaceAllowed(t *testing.T) {
	tests := map[string]struct {
		allowed, denied []string
		ns              string
		want            string // "" = allowed, else substring of the error
	}{
		"default allows none":          {denied: []string{"kube-system"}, ns: "default", want: `allowedNamespaces is empty; add "default" (or "*" for every namespace) to allowedNamespaces`},
		"star allows":                  {allowed: []string{"*"}, denied: []string{"kube-system"}, ns: "default"},
		"star keeps the deny list":     {allowed: []string{"*"}, denied: []string{"kube-system"}, ns: "kube-system", want: "remove it from deniedNamespaces"},
		"allow list hit":               {allowed: []string{"a", "b"}, ns: "b"},
		"allow list miss":              {allowed: []string{"a", "b"}, ns: "c", want: "not in the kfault node config's allowedNamespaces (a, b); add it there"},
		"deny wins over allow":         {allowed: []string{"a"}, denied: []string{"a"}, ns: "a", want: "denied"},
		"empty allow list allows none": {allowed: []string{}, ns: "a", want: "injects nothing"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := Config{AllowedNamespaces: tc.allowed, DeniedNamespaces: tc.denied}.NamespaceAllowed(tc.ns)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestPredicatesAllowed(t *testing.T) {
	const slab = annotations.Slab
	withPred := annotations.Fault{FailType: slab, CallChain: []annotations.Frame{{FuncName: "a"}, {FuncName: "b", Predicate: "x == 1"}}}
	noPred := annotations.Fault{FailType: slab, CallChain: []annotations.Frame{{FuncName: "a"}}}
	for name, tc := range map[string]struct {
		cfg    PredicatesConfig
		ns     string
		faults []annotations.Fault
		want   string // "" = admitted, else the whole error
	}{
		"zero config allows":      {ns: "a", faults: []annotations.Fault{withPred}},
		"default allow":           {cfg: PredicatesConfig{Default: PredicatesAllow}, ns: "a", faults: []annotations.Fault{withPred}},
		"deny list, other ns":     {cfg: PredicatesConfig{Deny: []string{"x"}}, ns: "a", faults: []annotations.Fault{withPred}},
		"deny list hit":           {cfg: PredicatesConfig{Deny: []string{"x", "y"}}, ns: "y", faults: []annotations.Fault{withPred}, want: `callchain[1].predicate: predicates are denied in namespace "y" by the kfault node config (predicates.deny: x, y); remove y from predicates.deny to allow them`},
		"deny list, no predicate": {cfg: PredicatesConfig{Deny: []string{"x"}}, ns: "x", faults: []annotations.Fault{noPred, {FailType: slab}}},
		"blank predicate":         {cfg: PredicatesConfig{Deny: []string{"x"}}, ns: "x", faults: []annotations.Fault{{FailType: slab, CallChain: []annotations.Frame{{FuncName: "a", Predicate: " "}}}}},
		"default deny":            {cfg: PredicatesConfig{Default: PredicatesDeny}, ns: "a", faults: []annotations.Fault{noPred, withPred}, want: `[1].callchain[1].predicate: predicates are denied in namespace "a" by the kfault node config (predicates.default: deny); add a to predicates.allow to allow them`},
		"default deny, allowed":   {cfg: PredicatesConfig{Default: PredicatesDeny, Allow: []string{"a"}}, ns: "a", faults: []annotations.Fault{withPred}},
		"deny wins over allow":    {cfg: PredicatesConfig{Default: PredicatesDeny, Allow: []string{"a"}, Deny: []string{"a"}}, ns: "a", faults: []annotations.Fault{withPred}, want: "predicates.deny: a"},
	} {
		t.Run(name, func(t *testing.T) {
			err := Config{Predicates: tc.cfg}.checkPredicates(tc.ns, tc.faults)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestFrameAllowed(t *testing.T) {
	def := DefaultConfig()
	for _, fn := range []string{"schedule", "schedule_timeout", "__schedule", "do_idle", "irq_exit_rcu", "__do_softirq",
		"handle_irq_event", "tick_sched_timer", "ktime_get_ns", "ktime_get", "rcu_read_unlock_strict", "__x86_indirect_thunk_rax",
		"bpf_map_lookup_elem", "__bpf_prog_enter", "migrate_disable", "_raw_spin_lock"} {
		if err := def.FrameAllowed(fn); err == nil || !strings.Contains(err.Error(), "frames.deny") {
			t.Errorf("default config allows a frame on %s: %v", fn, err)
		}
	}
	for _, fn := range []string{"d_alloc_parallel", "vfs_read", "__x64_sys_mount", "filename_lookup", "should_failslab", "schedulex", "ktime"} {
		if err := def.FrameAllowed(fn); err != nil {
			t.Errorf("default config refuses a frame on %s: %v", fn, err)
		}
	}
	err := def.FrameAllowed("schedule_timeout")
	want := `frame function "schedule_timeout" is denied by the kfault node config: it matches "schedule_*" in frames.deny (the default list: scheduler, interrupt, timer, RCU and BPF functions, whose frame programs would run for every task of the node); set frames.deny without "schedule_*" to allow it`
	if err == nil || err.Error() != want {
		t.Errorf("error:\n%v\nwant\n%s", err, want)
	}
	c := Config{Frames: FramesConfig{Deny: []string{"schedule"}, DenyExtra: []string{"vfs_*"}}}
	if err := c.FrameAllowed("vfs_read"); err == nil || err.Error() != `frame function "vfs_read" is denied by the kfault node config: it matches "vfs_*" in frames.denyExtra; remove "vfs_*" from frames.denyExtra to allow it` {
		t.Errorf("denyExtra: %v", err)
	}
	if err := c.FrameAllowed("rcu_read_lock"); err != nil {
		t.Errorf("a replaced deny list still denies rcu_*: %v", err)
	}
	if err := (Config{Frames: FramesConfig{Deny: []string{"*"}}}).FrameAllowed("d_alloc_parallel"); err == nil {
		t.Errorf(`"*" allows a frame`)
	}
	// checkFrames names the field; the fault index only for a list, as checkPredicates.
	slab := annotations.Slab
	ok := annotations.Fault{FailType: slab, CallChain: []annotations.Frame{{FuncName: "d_alloc_parallel"}}}
	bad := annotations.Fault{FailType: slab, CallChain: []annotations.Frame{{FuncName: "vfs_read"}, {FuncName: "rcu_note_context_switch"}}}
	if err := def.checkFrames([]annotations.Fault{ok, {FailType: slab}}); err != nil {
		t.Errorf("checkFrames: %v", err)
	}
	if err := def.checkFrames([]annotations.Fault{bad}); err == nil || !strings.HasPrefix(err.Error(), `callchain[1].funcname: frame function "rcu_note_context_switch"`) {
		t.Errorf("checkFrames, one fault: %v", err)
	}
	if err := def.checkFrames([]annotations.Fault{ok, bad}); err == nil || !strings.HasPrefix(err.Error(), `[1].callchain[1].funcname: `) {
		t.Errorf("checkFrames, two faults: %v", err)
	}
}
