package plugin

import (
	"errors"
	"slices"
	"strings"
	"testing"
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
