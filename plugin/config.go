// Package plugin is kfault's NRI plugin: it turns container lifecycle events (NRI for CRI
// pods, containerd's event stream for nerdctl/ctr containers) into Arm and Disarm calls on
// the fault engine, and keeps the node config, the state file and the metrics.
package plugin

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/kfault/kfault/annotations"
)

// Mode says what happens to a container whose fault cannot be honoured.
type Mode string

const (
	// Strict fails the container's creation (bad spec, disallowed namespace) or start
	// (arming failed). The error message reaches crictl / kubectl describe.
	Strict Mode = "strict"
	// Lenient logs the problem and lets the container run without the fault.
	Lenient Mode = "lenient"
)

// Defaults of the node config.
const (
	DefaultStateDir         = "/var/lib/kfault"
	DefaultContainerdSocket = "/run/containerd/containerd.sock"
	// DefaultK8sNamespace is the containerd namespace of CRI containers. NRI covers
	// it, so the containerd event watcher skips it.
	DefaultK8sNamespace = "k8s.io"
)

// DefaultDeniedNamespaces applies unless the config lists deniedNamespaces. A namespace
// of it that allowedNamespaces names explicitly is dropped from it.
var DefaultDeniedNamespaces = []string{"kube-system"}

// DefaultDeniedFrames applies unless the config lists frames.deny: the functions call-chain
// frames may not name. A pattern is a function name, or a prefix followed by "*". A frame's
// fentry/fexit programs run for every task of the node that calls its function (tasks outside
// the armed cgroups leave after the scope check, but they still enter the programs), so these
// are functions that run so often, or in such a context, that a frame there costs the whole
// node, records state for a task that did not call it, or recurses into BPF itself.
var DefaultDeniedFrames = []string{
	// The scheduler and the idle loop: every context switch and idle period of every CPU.
	"schedule", "schedule_*", "__schedule", "preempt_schedule*", "io_schedule*",
	"do_idle", "cpuidle_*", "default_idle*",
	// Hard and soft interrupts, NMIs: they run on whatever task they interrupt, so a frame
	// there would mark that task's state (the hot path never faults interrupt context either).
	"irq_*", "__irq_*", "handle_irq_event*", "__do_softirq", "handle_softirqs", "do_softirq*", "nmi_*",
	// The tick, timers and clocks: every CPU, every tick; BPF reads the clocks itself.
	"tick_*", "hrtimer_*", "ktime_get*", "sched_clock*",
	// What BPF trampolines and maps call around every program run (RCU, migration, spin
	// locks): a frame there runs inside the programs' own entry and exit.
	"rcu_*", "__rcu_*", "migrate_disable", "migrate_enable", "_raw_spin_*", "queued_spin_*",
	// Retpoline thunks (not functions) and BPF's own machinery.
	"__x86_indirect_thunk*", "__x86_return_thunk", "bpf_*", "__bpf_*",
}

// DefaultSandboxRuntimes applies unless the config lists sandboxRuntimes: the runtimes whose
// containers run under a kernel of their own (gVisor's runsc, Kata Containers' VMs). kfault's
// faults are the host kernel's: armed on such a container's cgroup they would hit the sandbox's
// own machinery (the gVisor Sentry, the VM's qemu/virtiofsd), not the container's code, so they
// are refused.
var DefaultSandboxRuntimes = []string{"runsc", "gvisor", "kata*"}

// AllNamespaces in allowedNamespaces allows every namespace that is not denied.
const AllNamespaces = "*"

// ErrNoNamespaceAllowed: allowedNamespaces is empty, as it is by default, so kfault injects
// nothing on this node. Containers run without their faults whatever the mode: an admin has
// not turned kfault on, and nobody asked for their pods to fail.
var ErrNoNamespaceAllowed = errors.New("kfault injects nothing on this node until an admin allows namespaces: the node config's allowedNamespaces is empty")

// Config is the node config: /etc/nri/conf.d/10-kfault.conf (delivered through NRI
// Configure), a --config file, or flags. Unknown keys are errors.
//
//	allowedNamespaces: [team-a, team-b]   # default: none, so nothing is injected; "*": every namespace ...
//	deniedNamespaces: [kube-system]       # ... except these (default: kube-system)
//	mode: strict                          # strict | lenient
//	stateDir: /var/lib/kfault
//	containerdSocket: /run/containerd/containerd.sock
//	metricsAddress: 127.0.0.1:9464        # absent: no metrics endpoint
//	metricsAllowNonLoopback: false        # true to serve metrics on a non-loopback address
//	controlSocket: /run/kfault/control.sock  # for kfault status / kfault disarm; "off" disables
//	events:
//	  enabled: true                       # watch containerd events for non-CRI containers
//	  skipNamespaces: [k8s.io]            # containerd namespaces the watcher ignores
//	predicates:                           # may call-chain frames carry a predicate?
//	  default: allow                      # allow | deny: namespaces not listed below
//	  deny: [tenant-x]                    # predicates refused here (wins over allow)
//	  allow: [chaos-team]                 # predicates allowed here when default is deny
//	quotas:                               # per namespace, of the engine's node-wide capacities
//	  default: {containers: 256, hooks: 16, chains: 63, frames: 8}  # the defaults: 1/4 of each
//	  namespaces:
//	    chaos-team: {containers: 1000, frames: 16}  # absent fields: quotas.default's
//	frames:                               # functions call-chain frames may not name
//	  deny: [schedule, rcu_*, ...]        # replaces DefaultDeniedFrames when given ([]: none)
//	  denyExtra: [my_hot_fn, my_subsys_*] # denied on top of deny (default: none)
//	sandboxRuntimes: [runsc, gvisor, kata*]  # runtimes refused (the default); []: none
//	bio:                                  # block devices bio faults never fail
//	  protectPaths: [/, /var/lib/containerd, /var/lib/kubelet]  # the default; replaces it when given
//	  protectDevices: ["259:0", /dev/sdb] # added to the devices of protectPaths (default: none)
//
// bio protects the node's filesystems from bio faults (failtype 2): no bio to a protected block
// device is ever failed, whatever the fault, and a fault whose devices list names one is
// refused. The devices are those holding protectPaths (their st_dev, resolved when the config
// is applied; a path that does not exist is skipped with a warning), the one holding stateDir
// (always), those of protectDevices (major:minor or a /dev path), and, recursively, the devices
// under any of them (device-mapper and md slaves). A path on a filesystem with no block device
// of its own (tmpfs, overlay) has nothing to protect; btrfs reports an anonymous device number
// (major 0) that no bio carries: name the btrfs disk in protectDevices (a warning says so).
// Bios with REQ_META, REQ_PREFLUSH or REQ_FUA (filesystem metadata, journal writes) are never
// failed on any device.
//
// For CRI pods the namespace is the Kubernetes namespace; for containers found by the
// containerd event watcher it is the containerd namespace (nerdctl: "default").
//
// Predicates are compiled to BPF against kernel BTF and read kernel memory; their safety
// rules (docs/predicates.md) keep them from kernel addresses, but a namespace whose pod
// authors should not read kernel data at all gets predicates: deny. A fault with a predicate
// there is refused at admission like a fault in a denied namespace (strict: the container is
// not created; lenient: a log line and no fault). Faults without predicates are unaffected.
//
// Quotas bound what one namespace's armed containers take of the engine, which every
// container on the node shares (quota.go): containers with armed faults, distinct hooked
// functions, call chains and call-chain frames. Something two containers of a namespace share
// counts once. A container that would take its namespace over a quota is refused like a
// disallowed one: strict, its creation or start fails with the quota, the usage and the key
// to raise; lenient, a log line and no fault. Containers found by synchronization or the
// containerd watcher run without their faults (logged).
//
// frames applies to every namespace: a fault whose callchain names a function that
// frames.deny or frames.denyExtra matches is refused at admission the same way. A pattern is
// a function name, or a prefix followed by "*" ("*" alone denies every frame, i.e. turns
// call chains off). Add to the default list with denyExtra; replace it with deny.
//
// sandboxRuntimes lists the runtimes whose containers kfault refuses to arm, as glob patterns
// (path.Match) on the runtime's name: the CRI runtime handler of the pod (NRI), or containerd's
// runtime name of the container, both as given (io.containerd.runsc.v1) and as its short name
// (runsc). A refusal is like a disallowed namespace's: strict, the container's creation fails
// with the runtime and the pattern; lenient, a log line and no fault. docs/runtimes.md.
type Config struct {
	AllowedNamespaces       []string         `json:"allowedNamespaces,omitempty"`
	DeniedNamespaces        []string         `json:"deniedNamespaces,omitempty"`
	Mode                    Mode             `json:"mode,omitempty"`
	StateDir                string           `json:"stateDir,omitempty"`
	ContainerdSocket        string           `json:"containerdSocket,omitempty"`
	MetricsAddress          string           `json:"metricsAddress,omitempty"`
	MetricsAllowNonLoopback bool             `json:"metricsAllowNonLoopback,omitempty"`
	ControlSocket           string           `json:"controlSocket,omitempty"`
	Events                  EventsConfig     `json:"events,omitzero"`
	Predicates              PredicatesConfig `json:"predicates,omitzero"`
	Quotas                  QuotasConfig     `json:"quotas,omitzero"`
	Frames                  FramesConfig     `json:"frames,omitzero"`
	SandboxRuntimes         []string         `json:"sandboxRuntimes,omitempty"`
	Bio                     BioConfig        `json:"bio,omitzero"`
}

// DefaultProtectPaths applies unless the config lists bio.protectPaths: the node's root, and
// containerd's and kubelet's roots (images, overlay upper layers, emptyDirs).
var DefaultProtectPaths = []string{"/", "/var/lib/containerd", "/var/lib/kubelet"}

// MaxProtectEntries bounds bio.protectPaths and bio.protectDevices, each.
const MaxProtectEntries = 32

// BioConfig says which block devices bio faults never fail, on the whole node.
type BioConfig struct {
	// ProtectPaths replaces DefaultProtectPaths when given (even empty): the devices holding
	// these paths are protected. stateDir's is protected whatever this says.
	ProtectPaths []string `json:"protectPaths,omitempty"`
	// ProtectDevices are protected as well: major:minor or /dev paths.
	ProtectDevices []string `json:"protectDevices,omitempty"`
}

// FramesConfig says which functions call-chain frames may not name, on the whole node.
type FramesConfig struct {
	// Deny replaces DefaultDeniedFrames when given (even empty).
	Deny []string `json:"deny,omitempty"`
	// DenyExtra is denied as well: the way to add to the default list without repeating it.
	DenyExtra []string `json:"denyExtra,omitempty"`
}

// PredicatesConfig says in which namespaces call-chain predicates are allowed.
type PredicatesConfig struct {
	// Default applies to namespaces in neither list: PredicatesAllow (the default) or
	// PredicatesDeny.
	Default PredicatePolicy `json:"default,omitempty"`
	// Deny lists namespaces whose faults may not carry predicates, whatever Default says.
	Deny []string `json:"deny,omitempty"`
	// Allow lists namespaces whose faults may carry predicates when Default is deny.
	Allow []string `json:"allow,omitempty"`
}

// PredicatePolicy is allow or deny.
type PredicatePolicy string

const (
	PredicatesAllow PredicatePolicy = "allow"
	PredicatesDeny  PredicatePolicy = "deny"
)

// EventsConfig configures the containerd event watcher (non-CRI containers).
type EventsConfig struct {
	// Enabled defaults to true; set false to handle CRI pods only.
	Enabled *bool `json:"enabled,omitempty"`
	// SkipNamespaces are containerd namespaces to ignore. Default: k8s.io, which NRI
	// already covers.
	SkipNamespaces []string `json:"skipNamespaces,omitempty"`
}

// ParseConfig reads a node config (YAML or JSON). Unknown keys are errors. Absent
// fields stay zero: apply Merge onto DefaultConfig() (or Resolve) to fill them.
func ParseConfig(data []byte) (Config, error) {
	var c Config
	if strings.TrimSpace(string(data)) == "" {
		return c, nil
	}
	var raw any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return Config{}, fmt.Errorf("node config: %w", err)
	}
	if err := checkKeys("", raw, reflect.TypeOf(c)); err != nil {
		return Config{}, fmt.Errorf("node config: %w", err)
	}
	if m, ok := raw.(map[string]any); ok {
		for _, k := range []struct{ key, example string }{
			{"predicates", "{default: deny, allow: [chaos-a]} or {deny: [tenant-x]}"},
			{"frames", "{denyExtra: [my_hot_function]} or {deny: [schedule, rcu_*]}"},
			{"bio", `{protectPaths: [/, /var/lib/containerd], protectDevices: ["259:0"]}`},
		} {
			if v, ok := m[k.key]; ok {
				if _, isMap := v.(map[string]any); !isMap && v != nil {
					return Config{}, fmt.Errorf("node config: %s: %v is not a map: write e.g. %s", k.key, v, k.example)
				}
			}
		}
	}
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return Config{}, fmt.Errorf("node config: %w", err)
	}
	return c, nil
}

// checkKeys rejects keys that t (a struct with json tags) does not have, naming the
// key's full path and the known keys. It follows pointers, and checks every value of a map
// (keyed by names, as quotas.namespaces) against the map's element type.
func checkKeys(prefix string, v any, t reflect.Type) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	if t.Kind() == reflect.Map {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if err := checkKeys(prefix+k+".", m[k], t.Elem()); err != nil {
				return err
			}
		}
		return nil
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	fields := map[string]reflect.Type{}
	var known []string
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		fields[name] = t.Field(i).Type
		known = append(known, name)
	}
	keys := slices.Sorted(maps.Keys(m))
	for _, k := range keys {
		ft, ok := fields[k]
		if !ok {
			return fmt.Errorf("unknown key %q (known keys: %s)", prefix+k, strings.Join(known, ", "))
		}
		if err := checkKeys(prefix+k+".", m[k], ft); err != nil {
			return err
		}
	}
	return nil
}

// DefaultConfig is the config with every default filled in.
func DefaultConfig() Config {
	enabled := true
	return Config{
		DeniedNamespaces: slices.Clone(DefaultDeniedNamespaces),
		Mode:             Strict,
		StateDir:         DefaultStateDir,
		ControlSocket:    DefaultControlSocket,
		ContainerdSocket: DefaultContainerdSocket,
		Events:           EventsConfig{Enabled: &enabled, SkipNamespaces: []string{DefaultK8sNamespace}},
		Predicates:       PredicatesConfig{Default: PredicatesAllow},
		Quotas:           QuotasConfig{Default: defaultQuota()},
		Frames:           FramesConfig{Deny: slices.Clone(DefaultDeniedFrames)},
		SandboxRuntimes:  slices.Clone(DefaultSandboxRuntimes),
		Bio:              BioConfig{ProtectPaths: slices.Clone(DefaultProtectPaths)},
	}
}

// Merge returns base with every field set in over replacing base's. A namespace list
// present in over (even empty, `[]`) replaces base's. When over sets allowedNamespaces but
// not deniedNamespaces, the namespaces it names explicitly leave the default deny list, so
// that listing kube-system as allowed works ("*" does not name it). Quotas merge field by
// field: quotas.default's, and each namespace's of quotas.namespaces.
func Merge(base, over Config) Config {
	out := base
	if over.AllowedNamespaces != nil {
		out.AllowedNamespaces = slices.Clone(over.AllowedNamespaces)
		if over.DeniedNamespaces == nil && slices.Equal(base.DeniedNamespaces, DefaultDeniedNamespaces) {
			out.DeniedNamespaces = slices.DeleteFunc(slices.Clone(base.DeniedNamespaces), func(ns string) bool {
				return slices.Contains(over.AllowedNamespaces, ns)
			})
		}
	}
	if over.DeniedNamespaces != nil {
		out.DeniedNamespaces = slices.Clone(over.DeniedNamespaces)
	}
	if over.Mode != "" {
		out.Mode = over.Mode
	}
	if over.StateDir != "" {
		out.StateDir = over.StateDir
	}
	if over.ContainerdSocket != "" {
		out.ContainerdSocket = over.ContainerdSocket
	}
	if over.MetricsAddress != "" {
		out.MetricsAddress = over.MetricsAddress
	}
	if over.ControlSocket != "" {
		out.ControlSocket = over.ControlSocket
	}
	if over.MetricsAllowNonLoopback {
		out.MetricsAllowNonLoopback = true
	}
	if over.Events.Enabled != nil {
		v := *over.Events.Enabled
		out.Events.Enabled = &v
	}
	if over.Events.SkipNamespaces != nil {
		out.Events.SkipNamespaces = slices.Clone(over.Events.SkipNamespaces)
	}
	if over.Predicates.Default != "" {
		out.Predicates.Default = over.Predicates.Default
	}
	if over.Predicates.Deny != nil {
		out.Predicates.Deny = slices.Clone(over.Predicates.Deny)
	}
	if over.Predicates.Allow != nil {
		out.Predicates.Allow = slices.Clone(over.Predicates.Allow)
	}
	out.Quotas = mergeQuotas(base.Quotas, over.Quotas)
	if over.Frames.Deny != nil {
		out.Frames.Deny = slices.Clone(over.Frames.Deny)
	}
	if over.Frames.DenyExtra != nil {
		out.Frames.DenyExtra = slices.Clone(over.Frames.DenyExtra)
	}
	if over.SandboxRuntimes != nil {
		out.SandboxRuntimes = slices.Clone(over.SandboxRuntimes)
	}
	if over.Bio.ProtectPaths != nil {
		out.Bio.ProtectPaths = slices.Clone(over.Bio.ProtectPaths)
	}
	if over.Bio.ProtectDevices != nil {
		out.Bio.ProtectDevices = slices.Clone(over.Bio.ProtectDevices)
	}
	return out
}

// Resolve merges the layers onto DefaultConfig in order (later wins) and validates.
func Resolve(layers ...Config) (Config, error) {
	c := DefaultConfig()
	for _, l := range layers {
		c = Merge(c, l)
	}
	return c, c.Validate()
}

// Validate checks a resolved config. Errors name the key.
func (c Config) Validate() error {
	switch c.Mode {
	case Strict, Lenient:
	default:
		return fmt.Errorf("node config: mode: %q is not strict or lenient", c.Mode)
	}
	if c.StateDir == "" {
		return fmt.Errorf("node config: stateDir: must not be empty")
	}
	for _, list := range []struct {
		key   string
		names []string
	}{{"allowedNamespaces", c.AllowedNamespaces}, {"deniedNamespaces", c.DeniedNamespaces}, {"events.skipNamespaces", c.Events.SkipNamespaces},
		{"predicates.deny", c.Predicates.Deny}, {"predicates.allow", c.Predicates.Allow}} {
		for i, n := range list.names {
			if strings.TrimSpace(n) == "" {
				return fmt.Errorf("node config: %s[%d]: empty namespace name", list.key, i)
			}
			if n == AllNamespaces && list.key != "allowedNamespaces" {
				return fmt.Errorf("node config: %s[%d]: %q means every namespace only in allowedNamespaces (to deny every namespace, leave allowedNamespaces empty)", list.key, i, n)
			}
		}
	}
	for _, list := range []struct {
		key      string
		patterns []string
	}{{"frames.deny", c.Frames.Deny}, {"frames.denyExtra", c.Frames.DenyExtra}} {
		for i, pat := range list.patterns {
			if !framePattern.MatchString(pat) {
				return fmt.Errorf("node config: %s[%d]: %q is not a function name or a prefix followed by * (e.g. schedule, rcu_*)", list.key, i, pat)
			}
		}
	}
	for i, pat := range c.SandboxRuntimes {
		if _, err := path.Match(pat, ""); err != nil || strings.TrimSpace(pat) == "" {
			return fmt.Errorf("node config: sandboxRuntimes[%d]: %q is not a runtime name or glob pattern (e.g. runsc, kata*)", i, pat)
		}
	}
	switch c.Predicates.Default {
	case "", PredicatesAllow, PredicatesDeny:
	default:
		return fmt.Errorf("node config: predicates.default: %q is not allow or deny", c.Predicates.Default)
	}
	if !c.ControlDisabled() && c.ControlSocket != "" && !filepath.IsAbs(c.ControlSocket) {
		return fmt.Errorf("node config: controlSocket: %q is not an absolute path (or off)", c.ControlSocket)
	}
	if err := c.Quotas.validate(); err != nil {
		return err
	}
	if err := c.Bio.validate(); err != nil {
		return err
	}
	if c.MetricsAddress != "" {
		if err := checkMetricsAddress(c.MetricsAddress, c.MetricsAllowNonLoopback); err != nil {
			return fmt.Errorf("node config: metricsAddress: %w", err)
		}
	}
	return nil
}

func (b BioConfig) validate() error {
	for _, list := range []struct {
		key     string
		entries []string
	}{{"bio.protectPaths", b.ProtectPaths}, {"bio.protectDevices", b.ProtectDevices}} {
		if len(list.entries) > MaxProtectEntries {
			return fmt.Errorf("node config: %s: %d entries, at most %d", list.key, len(list.entries), MaxProtectEntries)
		}
		for i, e := range list.entries {
			if list.key == "bio.protectPaths" {
				if !filepath.IsAbs(e) {
					return fmt.Errorf("node config: %s[%d]: %q is not an absolute path", list.key, i, e)
				}
				continue
			}
			if err := annotations.CheckDevice(e); err != nil {
				return fmt.Errorf("node config: %s[%d]: %q: %w", list.key, i, e, err)
			}
		}
	}
	return nil
}

// ControlDisabled reports whether the control socket is off ("off"; unquoted YAML off
// reads as false, which is accepted too).
func (c Config) ControlDisabled() bool {
	switch c.ControlSocket {
	case "", "off", "false", "none":
		return true
	}
	return false
}

// EventsEnabled reports whether the containerd event watcher should run.
func (c Config) EventsEnabled() bool {
	return c.Events.Enabled == nil || *c.Events.Enabled
}

// checkMetricsAddress accepts host:port with a loopback host (127.0.0.0/8, ::1,
// localhost), or any host when allowNonLoopback is set.
func checkMetricsAddress(addr string, allowNonLoopback bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: %v (want host:port, e.g. 127.0.0.1:9464)", addr, err)
	}
	if port == "" {
		return fmt.Errorf("%q: missing port", addr)
	}
	if allowNonLoopback {
		return nil
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address; metrics are served on loopback only unless metricsAllowNonLoopback is true", addr)
	}
	return nil
}

// NamespaceAllowed applies the allow and deny lists. The error says why not, and which
// setting to change; it wraps ErrNoNamespaceAllowed when the allow list is empty.
func (c Config) NamespaceAllowed(ns string) error {
	if slices.Contains(c.DeniedNamespaces, ns) {
		return fmt.Errorf("namespace %q is denied by the kfault node config (deniedNamespaces: %s); remove it from deniedNamespaces to allow it", ns, strings.Join(c.DeniedNamespaces, ", "))
	}
	if len(c.AllowedNamespaces) == 0 {
		return fmt.Errorf("%w; add %q (or %q for every namespace) to allowedNamespaces", ErrNoNamespaceAllowed, ns, AllNamespaces)
	}
	if !slices.Contains(c.AllowedNamespaces, AllNamespaces) && !slices.Contains(c.AllowedNamespaces, ns) {
		return fmt.Errorf("namespace %q is not in the kfault node config's allowedNamespaces (%s); add it there to allow it", ns, strings.Join(c.AllowedNamespaces, ", "))
	}
	return nil
}

// PredicatesAllowed applies the predicates switch to namespace ns. The error names the setting
// that refuses predicates there, and how to change it.
func (c Config) PredicatesAllowed(ns string) error {
	p := c.Predicates
	if slices.Contains(p.Deny, ns) {
		return fmt.Errorf("predicates are denied in namespace %q by the kfault node config (predicates.deny: %s); remove %s from predicates.deny to allow them", ns, strings.Join(p.Deny, ", "), ns)
	}
	if p.Default == PredicatesDeny && !slices.Contains(p.Allow, ns) {
		return fmt.Errorf("predicates are denied in namespace %q by the kfault node config (predicates.default: deny); add %s to predicates.allow to allow them", ns, ns)
	}
	return nil
}

// checkPredicates refuses faults that carry a call-chain predicate in a namespace where the
// node config denies predicates. The error names the first such field, as the annotation
// parser would ("[1].callchain[0].predicate: ...", no index for a single fault).
func (c Config) checkPredicates(ns string, faults []annotations.Fault) error {
	for i, f := range faults {
		for j, fr := range f.CallChain {
			if strings.TrimSpace(fr.Predicate) == "" {
				continue
			}
			err := c.PredicatesAllowed(ns)
			if err == nil {
				return nil
			}
			path := fmt.Sprintf("callchain[%d].predicate", j)
			if len(faults) > 1 {
				path = fmt.Sprintf("[%d].%s", i, path)
			}
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	return nil
}

// framePattern is a frames.deny entry: a C identifier, a prefix of one followed by "*", or "*".
var framePattern = regexp.MustCompile(`^(\*|[A-Za-z_][A-Za-z0-9_]*\*?)$`)

// frameDenied returns the first pattern of patterns that matches function fn.
func frameDenied(patterns []string, fn string) (string, bool) {
	for _, pat := range patterns {
		if prefix, ok := strings.CutSuffix(pat, "*"); ok {
			if strings.HasPrefix(fn, prefix) {
				return pat, true
			}
		} else if fn == pat {
			return pat, true
		}
	}
	return "", false
}

// FrameAllowed applies frames.deny and frames.denyExtra to function fn. The error names the
// setting and the pattern that refuse it, and how to change them.
func (c Config) FrameAllowed(fn string) error {
	fn = strings.TrimSpace(fn)
	if pat, ok := frameDenied(c.Frames.Deny, fn); ok {
		why := ""
		if slices.Contains(DefaultDeniedFrames, pat) {
			why = " (the default list: scheduler, interrupt, timer, RCU and BPF functions, whose frame programs would run for every task of the node)"
		}
		return fmt.Errorf("frame function %q is denied by the kfault node config: it matches %q in frames.deny%s; set frames.deny without %q to allow it", fn, pat, why, pat)
	}
	if pat, ok := frameDenied(c.Frames.DenyExtra, fn); ok {
		return fmt.Errorf("frame function %q is denied by the kfault node config: it matches %q in frames.denyExtra; remove %q from frames.denyExtra to allow it", fn, pat, pat)
	}
	return nil
}

// checkFrames refuses faults whose call chain names a function the node config denies. The
// error names the first such field, as checkPredicates does ("[1].callchain[0].funcname: ...").
func (c Config) checkFrames(faults []annotations.Fault) error {
	for i, f := range faults {
		for j, fr := range f.CallChain {
			err := c.FrameAllowed(fr.FuncName)
			if err == nil {
				continue
			}
			path := fmt.Sprintf("callchain[%d].funcname", j)
			if len(faults) > 1 {
				path = fmt.Sprintf("[%d].%s", i, path)
			}
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	return nil
}

// runtimeShortName is containerd's runtime name without its io.containerd. prefix and .vN
// suffix (io.containerd.kata-qemu.v2: kata-qemu); other names as they are.
func runtimeShortName(name string) string {
	rest, ok := strings.CutPrefix(name, "io.containerd.")
	if !ok {
		return name
	}
	if i := strings.LastIndex(rest, ".v"); i > 0 {
		if _, err := strconv.Atoi(rest[i+2:]); err == nil {
			return rest[:i]
		}
	}
	return rest
}

// RuntimeAllowed applies sandboxRuntimes to a container's runtime (a CRI runtime handler or a
// containerd runtime name; empty: the default runtime, allowed). The error names the runtime,
// the pattern and why.
func (c Config) RuntimeAllowed(runtime string) error {
	runtime = strings.TrimSpace(runtime)
	if runtime == "" {
		return nil
	}
	short := runtimeShortName(runtime)
	for _, pat := range c.SandboxRuntimes {
		for _, name := range []string{runtime, short} {
			if ok, _ := path.Match(pat, name); ok {
				return fmt.Errorf("runtime %q is a sandbox (it matches %q in the kfault node config's sandboxRuntimes): "+
					"its containers run on a kernel of their own, and a host kernel fault would hit the sandbox, not the container's code; "+
					"kfault refuses to arm it (docs/runtimes.md)", runtime, pat)
			}
		}
	}
	return nil
}

// skipsEventNamespace reports whether the containerd event watcher ignores ns.
func (c Config) skipsEventNamespace(ns string) bool {
	return slices.Contains(c.Events.SkipNamespaces, ns)
}
