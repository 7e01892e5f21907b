package annotations

import "testing"

func TestEffective(t *testing.T) {
	const c, p, b, own = "container value", "pod value", "bare value", "own value"
	for name, tc := range map[string]struct {
		container  string
		pod, own   map[string]string
		value, key string
		ok         bool
	}{
		"container key wins over pod and bare": {
			container: "app",
			pod:       map[string]string{ContainerKey("app"): c, PodKey: p, Key: b},
			value:     c, key: "faults.kfault.dev/container.app", ok: true,
		},
		"pod key wins over bare": {
			container: "app",
			pod:       map[string]string{PodKey: p, Key: b, ContainerKey("other"): c},
			value:     p, key: "faults.kfault.dev/pod", ok: true,
		},
		"bare key on the pod": {
			container: "app",
			pod:       map[string]string{Key: b},
			value:     b, key: "faults.kfault.dev", ok: true,
		},
		"other container's key does not apply": {
			container: "app",
			pod:       map[string]string{ContainerKey("sidecar"): c},
		},
		"pod annotations win over the container's own": {
			container: "app",
			pod:       map[string]string{PodKey: p},
			own:       map[string]string{Key: own},
			value:     p, key: PodKey, ok: true,
		},
		"container's own bare key (nerdctl)": {
			container: "web",
			own:       map[string]string{Key: own, "other": "x"},
			value:     own, key: Key, ok: true,
		},
		"container's own container key beats its bare key": {
			container: "web",
			own:       map[string]string{Key: b, ContainerKey("web"): own},
			value:     own, key: ContainerKey("web"), ok: true,
		},
		"empty value is still found (Parse rejects it)": {
			container: "app",
			pod:       map[string]string{PodKey: ""},
			value:     "", key: PodKey, ok: true,
		},
		"nothing":  {container: "app", pod: map[string]string{"unrelated": "x"}},
		"nil maps": {container: "app"},
		"similar but wrong keys": {
			container: "app",
			pod:       map[string]string{"faults.kfault.dev/container.App": c, "faults.kfault.dev/pods": p},
		},
	} {
		t.Run(name, func(t *testing.T) {
			v, k, ok := Effective(tc.container, tc.pod, tc.own)
			if v != tc.value || k != tc.key || ok != tc.ok {
				t.Fatalf("Effective = %q, %q, %v; want %q, %q, %v", v, k, ok, tc.value, tc.key, tc.ok)
			}
		})
	}
}

func TestParseKey(t *testing.T) {
	for key, tc := range map[string]struct {
		container string
		ours      bool
		err       string
	}{
		"faults.kfault.dev":                 {ours: true},
		"faults.kfault.dev/pod":             {ours: true},
		"faults.kfault.dev/container.app":   {container: "app", ours: true},
		"faults.kfault.dev/container.":      {ours: true, err: `annotation faults.kfault.dev/container.: missing container name after "faults.kfault.dev/container."`},
		"faults.kfault.dev/containers.app":  {ours: true, err: "annotation faults.kfault.dev/containers.app: unknown key; use faults.kfault.dev, faults.kfault.dev/pod or faults.kfault.dev/container.<container name>"},
		"fault.kfault.dev/pod":              {ours: true, err: `annotation fault.kfault.dev/pod: unknown domain "fault.kfault.dev" (did you mean "faults.kfault.dev"?)`},
		"kfault.dev/pod":                    {ours: true, err: `annotation kfault.dev/pod: unknown domain "kfault.dev" (did you mean "faults.kfault.dev"?)`},
		"noderesource.dev/required-plugins": {},
		"io.kubernetes.container.hash":      {},
		"":                                  {},
	} {
		t.Run(key, func(t *testing.T) {
			c, ours, err := ParseKey(key)
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if c != tc.container || ours != tc.ours || gotErr != tc.err {
				t.Fatalf("ParseKey = %q, %v, %q; want %q, %v, %q", c, ours, gotErr, tc.container, tc.ours, tc.err)
			}
		})
	}
}
