package install_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	nriapi "github.com/containerd/nri/pkg/api"
	toml "github.com/pelletier/go-toml/v2"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kfault/kfault/install"
	"github.com/kfault/kfault/plugin"
)

// The paths every install method agrees on.
const (
	nriSocket        = "/var/run/nri/nri.sock"
	nriPluginPath    = "/opt/nri/plugins"
	nriConfigPath    = "/etc/nri/conf.d"
	nriPluginFile    = "10-kfault"
	nodeConfDest     = "/etc/nri/conf.d/10-kfault.conf"
	unitDest         = "/etc/systemd/system/kfault.service"
	daemonSetNS      = "kfault-system"
	configMountPath  = "/etc/kfault"
	configKey        = "config.yaml"
	imagePlaceholder = "ghcr.io/kfault/kfault"
)

// ---------------------------------------------------------------------------
// Kubernetes: render with kustomize (in-process `kubectl kustomize`), decode
// strictly, check the DaemonSet.

// render builds the kustomization in dir (install.Render) and wants one object of each kind.
func render(t *testing.T, dir string) install.Rendered {
	t.Helper()
	out, err := install.Render(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Namespaces) != 1 || len(out.ServiceAccounts) != 1 || len(out.ConfigMaps) != 1 || len(out.DaemonSets) != 1 {
		t.Fatalf("want one Namespace, ServiceAccount, ConfigMap and DaemonSet; got %d, %d, %d, %d",
			len(out.Namespaces), len(out.ServiceAccounts), len(out.ConfigMaps), len(out.DaemonSets))
	}
	return out
}

func kfaultContainer(t *testing.T, ds *appsv1.DaemonSet) *corev1.Container {
	t.Helper()
	cs := ds.Spec.Template.Spec.Containers
	if len(cs) != 1 || len(ds.Spec.Template.Spec.InitContainers) != 0 {
		t.Fatalf("want exactly one container and no init containers, got %d and %d", len(cs), len(ds.Spec.Template.Spec.InitContainers))
	}
	return &cs[0]
}

func TestKustomizationObjects(t *testing.T) {
	r := render(t, "kubernetes")
	ns, sa, cm, ds := r.Namespaces[0], r.ServiceAccounts[0], r.ConfigMaps[0], r.DaemonSets[0]

	if ns.Name != daemonSetNS {
		t.Errorf("Namespace is %q, want %q", ns.Name, daemonSetNS)
	}
	// hostPID, hostPath and capabilities are beyond the baseline Pod Security level.
	if got := ns.Labels["pod-security.kubernetes.io/enforce"]; got != "privileged" {
		t.Errorf("Namespace label pod-security.kubernetes.io/enforce = %q, want privileged", got)
	}
	for _, o := range []struct{ kind, ns string }{{"ServiceAccount", sa.Namespace}, {"ConfigMap", cm.Namespace}, {"DaemonSet", ds.Namespace}} {
		if o.ns != daemonSetNS {
			t.Errorf("%s is in namespace %q, want %q", o.kind, o.ns, daemonSetNS)
		}
	}
	if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Errorf("ServiceAccount must set automountServiceAccountToken: false")
	}
	if !strings.HasPrefix(cm.Name, "kfault-config") {
		t.Errorf("ConfigMap name %q", cm.Name)
	}
}

// mountSpec is what one host path mount must look like.
type mountSpec struct {
	hostPath  string
	hostType  corev1.HostPathType
	mountPath string
	readOnly  bool
	propagate corev1.MountPropagationMode // "" = none set
	why       string
}

// wantHostMounts are the DaemonSet's host paths, all of them: any other hostPath
// volume is a test failure (least privilege).
var wantHostMounts = map[string]mountSpec{
	"nri-socket-dir":        {"/var/run/nri", corev1.HostPathDirectory, "/var/run/nri", true, "", "the NRI socket directory"},
	"containerd-socket-dir": {"/run/containerd", corev1.HostPathDirectory, "/run/containerd", true, corev1.MountPropagationHostToContainer, "containerd's socket, for the event watcher"},
	"cgroup":                {"/sys/fs/cgroup", corev1.HostPathDirectory, "/sys/fs/cgroup", true, "", "cgroupfs, to resolve cgroup ids"},
	"btf":                   {"/sys/kernel/btf", corev1.HostPathDirectory, "/sys/kernel/btf", true, "", "kernel BTF"},
	"debugfs":               {"/sys/kernel/debug", corev1.HostPathDirectory, "/sys/kernel/debug", true, "", "the error-injection list"},
	"state":                 {"/var/lib/kfault", corev1.HostPathDirectoryOrCreate, "/var/lib/kfault", false, "", "the state directory"},
	"host-root":             {"/", corev1.HostPathDirectory, "/host", true, "", "the node's root, stat()ed for bio.protectPaths"},
}

func TestDaemonSet(t *testing.T) {
	r := render(t, "kubernetes")
	ds := &r.DaemonSets[0]
	spec := &ds.Spec.Template.Spec
	c := kfaultContainer(t, ds)

	// The selector must select the pod template (kustomize's labels with
	// includeSelectors put it in).
	if ds.Spec.Selector == nil || len(ds.Spec.Selector.MatchLabels) == 0 {
		t.Fatalf("DaemonSet has no selector")
	}
	for k, v := range ds.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod template labels %v", k, v, ds.Spec.Template.Labels)
		}
	}

	// Names the API server would reject (kubectl kustomize does not check them).
	names := []string{ds.Name, c.Name}
	mountPaths := map[string]string{}
	for _, v := range spec.Volumes {
		names = append(names, v.Name)
	}
	for _, m := range c.VolumeMounts {
		if other, dup := mountPaths[m.MountPath]; dup {
			t.Errorf("volumes %s and %s are both mounted at %s", other, m.Name, m.MountPath)
		}
		mountPaths[m.MountPath] = m.Name
	}
	for _, n := range names {
		if errs := validation.IsDNS1123Label(n); len(errs) > 0 {
			t.Errorf("name %q: %v", n, errs)
		}
	}

	// Pod-level settings.
	if !spec.HostPID {
		t.Errorf("hostPID must be true: NRI gives host pids and kfault reads /proc/<pid>/cgroup")
	}
	if spec.HostNetwork || spec.HostIPC {
		t.Errorf("hostNetwork/hostIPC are not needed (got %v/%v)", spec.HostNetwork, spec.HostIPC)
	}
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName = %q, want system-node-critical", spec.PriorityClassName)
	}
	if len(spec.NodeSelector) != 0 || spec.Affinity != nil {
		t.Errorf("no nodeSelector/affinity expected: kfault runs on every node (got %v, %v)", spec.NodeSelector, spec.Affinity)
	}
	tolerateAll := slices.ContainsFunc(spec.Tolerations, func(tl corev1.Toleration) bool {
		return tl.Key == "" && tl.Operator == corev1.TolerationOpExists && tl.Effect == ""
	})
	if !tolerateAll {
		t.Errorf("want a toleration {operator: Exists} so that every node runs kfault, got %v", spec.Tolerations)
	}
	if spec.ServiceAccountName != "kfault" || r.ServiceAccounts[0].Name != "kfault" {
		t.Errorf("serviceAccountName = %q, ServiceAccount = %q, want kfault", spec.ServiceAccountName, r.ServiceAccounts[0].Name)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("pod must set automountServiceAccountToken: false")
	}
	if spec.SecurityContext == nil || spec.SecurityContext.SeccompProfile == nil || spec.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("want seccompProfile RuntimeDefault")
	}

	// The image is the placeholder set in kubernetes/kustomization.yaml.
	if !strings.HasPrefix(c.Image, imagePlaceholder+":") && !strings.HasPrefix(c.Image, imagePlaceholder+"@") {
		t.Errorf("image = %q, want %s:<tag>", c.Image, imagePlaceholder)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Errorf("want cpu and memory requests, got %v", c.Resources.Requests)
	}
	if len(c.Ports) != 0 {
		t.Errorf("no ports expected (metrics are off by default), got %v", c.Ports)
	}

	// Container security: not privileged, exactly the three capabilities.
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatalf("container has no securityContext.capabilities")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("container must not be privileged")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("want allowPrivilegeEscalation: false")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("want readOnlyRootFilesystem: true")
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Errorf("want runAsUser: 0 (the sockets and debugfs are root-only)")
	}
	if !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("capabilities.drop = %v, want [ALL]", sc.Capabilities.Drop)
	}
	if got, want := capSet(sc.Capabilities.Add), []string{"BPF", "PERFMON", "SYS_RESOURCE"}; !slices.Equal(got, want) {
		t.Errorf("capabilities.add = %v, want %v", got, want)
	}

	// Volumes: exactly the host paths above, plus the ConfigMap.
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		if _, dup := mounts[m.Name]; dup {
			t.Errorf("volume %s mounted twice", m.Name)
		}
		mounts[m.Name] = m
	}
	var configVol *corev1.Volume
	seen := map[string]bool{}
	for i := range spec.Volumes {
		v := &spec.Volumes[i]
		if v.ConfigMap != nil {
			if configVol != nil {
				t.Errorf("more than one ConfigMap volume")
			}
			configVol = v
			continue
		}
		if v.EmptyDir != nil && v.Name == "run" {
			continue // the control socket's directory, checked in TestDaemonSetConfig
		}
		if v.HostPath == nil {
			t.Errorf("volume %s is neither a hostPath, the ConfigMap nor the run emptyDir", v.Name)
			continue
		}
		want, ok := wantHostMounts[v.Name]
		if !ok {
			t.Errorf("unexpected hostPath volume %s (%s): every host path must be one kfault needs", v.Name, v.HostPath.Path)
			continue
		}
		seen[v.Name] = true
		if v.HostPath.Path != want.hostPath {
			t.Errorf("volume %s (%s): hostPath %s, want %s", v.Name, want.why, v.HostPath.Path, want.hostPath)
		}
		if v.HostPath.Type == nil || *v.HostPath.Type != want.hostType {
			t.Errorf("volume %s (%s): hostPath type %v, want %s", v.Name, want.why, v.HostPath.Type, want.hostType)
		}
		m, ok := mounts[v.Name]
		if !ok {
			t.Errorf("volume %s (%s) is not mounted", v.Name, want.why)
			continue
		}
		if m.MountPath != want.mountPath {
			t.Errorf("volume %s (%s) mounted at %s, want %s", v.Name, want.why, m.MountPath, want.mountPath)
		}
		if m.ReadOnly != want.readOnly {
			t.Errorf("volume %s (%s): readOnly = %v, want %v", v.Name, want.why, m.ReadOnly, want.readOnly)
		}
		var prop corev1.MountPropagationMode
		if m.MountPropagation != nil {
			prop = *m.MountPropagation
		}
		if prop != want.propagate {
			t.Errorf("volume %s (%s): mountPropagation %q, want %q", v.Name, want.why, prop, want.propagate)
		}
		if m.SubPath != "" || m.SubPathExpr != "" {
			t.Errorf("volume %s: no subPath expected", v.Name)
		}
	}
	for name, want := range wantHostMounts {
		if !seen[name] {
			t.Errorf("missing hostPath volume %s (%s at %s)", name, want.why, want.hostPath)
		}
	}
	for name := range mounts {
		if _, ok := wantHostMounts[name]; !ok && name != "run" && (configVol == nil || name != configVol.Name) {
			t.Errorf("volumeMount %s has no matching volume", name)
		}
	}

	// The NRI socket containerd creates (socket_path in the snippets) is inside the
	// mounted directory, at the same path in the container (kfault's default --socket).
	if nm := mounts["nri-socket-dir"]; path.Dir(nriSocket) != nm.MountPath || path.Dir(nriSocket) != wantHostMounts["nri-socket-dir"].hostPath {
		t.Errorf("the NRI socket %s is not under the mounted directory %s", nriSocket, nm.MountPath)
	}
	if nriapi.DefaultSocketPath != nriSocket {
		t.Errorf("NRI's default socket is %s, the manifests assume %s", nriapi.DefaultSocketPath, nriSocket)
	}

	// The command and the config it reads from the ConfigMap.
	argv := append(slices.Clone(c.Command), c.Args...)
	if len(argv) < 2 || path.Base(argv[0]) != "kfault" || argv[1] != "nri" {
		t.Fatalf("container runs %q, want kfault nri ...", argv)
	}
	cfgFile := flagValue(argv, "config")
	if cfgFile == "" {
		t.Fatalf("container runs %q without --config", argv)
	}
	if configVol == nil {
		t.Fatalf("no ConfigMap volume")
	}
	cm := r.ConfigMaps[0]
	if configVol.ConfigMap.Name != cm.Name {
		t.Errorf("the ConfigMap volume refers to %q, the ConfigMap is %q", configVol.ConfigMap.Name, cm.Name)
	}
	cmMount, ok := mounts[configVol.Name]
	if !ok {
		t.Fatalf("the ConfigMap volume %s is not mounted", configVol.Name)
	}
	if cmMount.MountPath != configMountPath || !cmMount.ReadOnly {
		t.Errorf("ConfigMap mounted at %s (readOnly %v), want %s read-only", cmMount.MountPath, cmMount.ReadOnly, configMountPath)
	}
	if path.Dir(cfgFile) != cmMount.MountPath {
		t.Errorf("--config %s is not in the ConfigMap mount %s", cfgFile, cmMount.MountPath)
	}
	key := path.Base(cfgFile)
	if items := configVol.ConfigMap.Items; len(items) > 0 {
		key = ""
		for _, it := range items {
			if it.Path == path.Base(cfgFile) {
				key = it.Key
			}
		}
	}
	if key != configKey {
		t.Errorf("--config %s reads ConfigMap key %q, want %q", cfgFile, key, configKey)
	}
	if _, ok := cm.Data[key]; !ok {
		t.Errorf("ConfigMap %s has no key %q (keys: %v)", cm.Name, key, slices.Sorted(maps.Keys(cm.Data)))
	}
}

// TestDaemonSetConfig parses the ConfigMap's node config with the plugin's parser and
// checks it against the DaemonSet: the namespaces kfault must never fault, the state
// directory on the hostPath, the containerd socket under its mount.
func TestDaemonSetConfig(t *testing.T) {
	r := render(t, "kubernetes")
	ds := &r.DaemonSets[0]
	c := kfaultContainer(t, ds)
	text := r.ConfigMaps[0].Data[configKey]
	cfg := parseNodeConfig(t, "ConfigMap "+configKey, text)

	for _, ns := range []string{"kube-system", ds.Namespace} {
		if err := cfg.NamespaceAllowed(ns); err == nil {
			t.Errorf("the DaemonSet's config allows faults in namespace %s", ns)
		}
	}
	// Default deny: nothing is injected until an admin lists namespaces.
	if err := cfg.NamespaceAllowed("default"); !errors.Is(err, plugin.ErrNoNamespaceAllowed) {
		t.Errorf("the DaemonSet's config should allow no namespace until an admin lists some: %v", err)
	}
	if cfg.Mode != plugin.Strict {
		t.Errorf("mode = %s, want strict", cfg.Mode)
	}
	mountOf := func(name string) string {
		for _, m := range c.VolumeMounts {
			if m.Name == name {
				return m.MountPath
			}
		}
		return ""
	}
	if cfg.StateDir != mountOf("state") {
		t.Errorf("stateDir %s is not the state hostPath mount %s", cfg.StateDir, mountOf("state"))
	}
	if cfg.EventsEnabled() && path.Dir(cfg.ContainerdSocket) != mountOf("containerd-socket-dir") {
		t.Errorf("containerdSocket %s is not in the mounted directory %s", cfg.ContainerdSocket, mountOf("containerd-socket-dir"))
	}
	if cfg.MetricsAddress != "" {
		t.Errorf("metrics should be off by default in the DaemonSet, got %s", cfg.MetricsAddress)
	}
	// The control socket needs a writable directory: the root file system is
	// read-only.
	if cfg.ControlDisabled() {
		t.Errorf("the DaemonSet's config disables the control socket (kfault status / disarm --all)")
	} else if dir := path.Dir(cfg.ControlSocket); dir != mountOf("run") {
		t.Errorf("controlSocket %s is not in the writable run mount %q", cfg.ControlSocket, mountOf("run"))
	}
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.Name == "run" && v.EmptyDir == nil {
			t.Errorf("volume run should be a pod-local emptyDir")
		}
	}
}

// TestCapSysAdminComponent renders an overlay with components/cap-sys-admin, the way
// a user would for kernels before 5.8.
func TestCapSysAdminComponent(t *testing.T) {
	base, err := filepath.Abs("kubernetes")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rel, err := filepath.Rel(dir, base) // kustomize wants relative roots
	if err != nil {
		t.Fatal(err)
	}
	k := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - %s\ncomponents:\n  - %s\n",
		rel, filepath.Join(rel, "components", "cap-sys-admin"))
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	r := render(t, dir)
	sc := kfaultContainer(t, &r.DaemonSets[0]).SecurityContext
	if got, want := capSet(sc.Capabilities.Add), []string{"BPF", "PERFMON", "SYS_ADMIN", "SYS_RESOURCE"}; !slices.Equal(got, want) {
		t.Errorf("capabilities.add = %v, want %v", got, want)
	}
	// The API server rejects allowPrivilegeEscalation: false with SYS_ADMIN.
	if sc.AllowPrivilegeEscalation == nil || !*sc.AllowPrivilegeEscalation {
		t.Errorf("with SYS_ADMIN, allowPrivilegeEscalation must be true")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("still not privileged")
	}
}

// ---------------------------------------------------------------------------
// Node configs.

// parseNodeConfig parses with plugin.ParseConfig (unknown keys are errors) and
// resolves onto the defaults (plugin.Resolve validates).
func parseNodeConfig(t *testing.T, what, text string) plugin.Config {
	t.Helper()
	if strings.TrimSpace(text) == "" {
		t.Fatalf("%s is empty", what)
	}
	c, err := plugin.ParseConfig([]byte(text))
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	cfg, err := plugin.Resolve(c)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return cfg
}

// TestNRIConf: install/nri/10-kfault.conf parses, and (as its comments say) the
// values it sets are exactly the defaults.
func TestNRIConf(t *testing.T) {
	data, err := os.ReadFile("nri/10-kfault.conf")
	if err != nil {
		t.Fatal(err)
	}
	cfg := parseNodeConfig(t, "nri/10-kfault.conf", string(data))
	if def := plugin.DefaultConfig(); !reflect.DeepEqual(cfg, def) {
		t.Errorf("nri/10-kfault.conf says it sets the defaults, but resolves to\n%+v\nnot\n%+v", cfg, def)
	}
	if err := cfg.NamespaceAllowed("kube-system"); err == nil {
		t.Errorf("nri/10-kfault.conf allows faults in kube-system")
	}
	if err := cfg.NamespaceAllowed("default"); !errors.Is(err, plugin.ErrNoNamespaceAllowed) {
		t.Errorf("nri/10-kfault.conf should allow no namespace until an admin lists some: %v", err)
	}
	// The commented-out examples are valid too once uncommented.
	var uncommented []string
	for _, l := range strings.Split(string(data), "\n") {
		if m := regexp.MustCompile(`^#([a-zA-Z]+:.*)$`).FindStringSubmatch(l); m != nil {
			uncommented = append(uncommented, m[1])
		} else {
			uncommented = append(uncommented, l)
		}
	}
	parseNodeConfig(t, "nri/10-kfault.conf with the examples uncommented", strings.Join(uncommented, "\n"))
}

// TestNRILauncher: the pre-registration file is named as NRI wants it and execs
// `kfault nri`.
func TestNRILauncher(t *testing.T) {
	p := filepath.Join("nri", nriPluginFile)
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	// containerd skips plugin files without an execute bit.
	if st.Mode().Perm()&0o111 == 0 {
		t.Errorf("%s is not executable (%v)", p, st.Mode())
	}
	idx, name, err := nriapi.ParsePluginName(nriPluginFile)
	if err != nil {
		t.Fatal(err)
	}
	if idx != plugin.DefaultPluginIndex || name != plugin.DefaultPluginName {
		t.Errorf("%s registers as %s-%s, the plugin's defaults are %s-%s", nriPluginFile, idx, name, plugin.DefaultPluginIndex, plugin.DefaultPluginName)
	}
	// The drop-in containerd looks up for it is the file `make install` installs.
	if got := path.Join(nriConfigPath, nriPluginFile+".conf"); got != nodeConfDest {
		t.Errorf("NRI reads %s for this plugin, make install writes %s", got, nodeConfDest)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, []byte("#!/bin/sh\n")) {
		t.Errorf("%s must start with #!/bin/sh (containerd passes no PATH)", p)
	}
	if !regexp.MustCompile(`(?m)^exec /usr/local/bin/kfault nri "\$@"$`).Match(data) {
		t.Errorf("%s must exec /usr/local/bin/kfault nri", p)
	}
	if sh, err := exec.LookPath("sh"); err == nil {
		if out, err := exec.Command(sh, "-n", p).CombinedOutput(); err != nil {
			t.Errorf("sh -n %s: %v\n%s", p, err, out)
		}
	}
}

// ---------------------------------------------------------------------------
// containerd snippets.

// nriSection mirrors containerd's NRI plugin config (internal/nri/config.go in
// containerd 2.x, pkg/nri/config.go in 1.7), field for field. Pointers tell a
// missing key from a zero value.
type nriSection struct {
	Disable                   *bool          `toml:"disable"`
	SocketPath                *string        `toml:"socket_path"`
	PluginPath                *string        `toml:"plugin_path"`
	PluginConfigPath          *string        `toml:"plugin_config_path"`
	PluginRegistrationTimeout *string        `toml:"plugin_registration_timeout"`
	PluginRequestTimeout      *string        `toml:"plugin_request_timeout"`
	DisableConnections        *bool          `toml:"disable_connections"`
	DefaultValidator          map[string]any `toml:"default_validator"` // 2.x only
}

type containerdSnippet struct {
	Version int `toml:"version"`
	Plugins struct {
		NRI *nriSection `toml:"io.containerd.nri.v1.nri"`
	} `toml:"plugins"`
}

func TestContainerdSnippets(t *testing.T) {
	for file, version := range map[string]int{
		"containerd/nri-1.7.toml": 2, // containerd 1.7: config version 2
		"containerd/nri-2.x.toml": 3, // containerd 2.x: config version 3
	} {
		t.Run(path.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var s containerdSnippet
			dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
			if err := dec.Decode(&s); err != nil {
				var sme *toml.StrictMissingError
				if errors.As(err, &sme) {
					t.Fatalf("%s: keys containerd's NRI config does not have:\n%s", file, sme.String())
				}
				t.Fatalf("%s: %v", file, err)
			}
			if s.Version != version {
				t.Errorf("version = %d, want %d", s.Version, version)
			}
			n := s.Plugins.NRI
			if n == nil {
				t.Fatalf(`no [plugins."io.containerd.nri.v1.nri"] section`)
			}
			if n.Disable == nil || *n.Disable {
				t.Errorf("want an explicit disable = false")
			}
			if n.DisableConnections != nil && *n.DisableConnections {
				t.Errorf("disable_connections = true would lock out the systemd unit and the DaemonSet")
			}
			wantStr := map[string]struct {
				got  *string
				want string
			}{
				"socket_path":        {n.SocketPath, nriSocket},
				"plugin_path":        {n.PluginPath, nriPluginPath},
				"plugin_config_path": {n.PluginConfigPath, nriConfigPath},
			}
			for k, w := range wantStr {
				if w.got == nil {
					t.Errorf("%s missing", k)
				} else if *w.got != w.want {
					t.Errorf("%s = %q, want %q", k, *w.got, w.want)
				}
			}
			for k, w := range map[string]struct {
				got  *string
				want time.Duration
			}{
				"plugin_registration_timeout": {n.PluginRegistrationTimeout, nriapi.DefaultPluginRegistrationTimeout},
				"plugin_request_timeout":      {n.PluginRequestTimeout, nriapi.DefaultPluginRequestTimeout},
			} {
				if w.got == nil {
					t.Errorf("%s missing", k)
					continue
				}
				d, err := time.ParseDuration(*w.got)
				if err != nil {
					t.Errorf("%s: %v", k, err)
				} else if d != w.want {
					t.Errorf("%s = %v; the snippet shows the default, %v", k, d, w.want)
				}
			}
			if version == 2 && n.DefaultValidator != nil {
				t.Errorf("default_validator does not exist in containerd 1.7")
			}
		})
	}
}

// ---------------------------------------------------------------------------
// systemd unit and the Makefile.

// unitFile is a parsed systemd unit: section → key → values (in order).
type unitFile map[string]map[string][]string

func parseUnit(t *testing.T, file string) unitFile {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	u := unitFile{}
	sec := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";"):
		case strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]"):
			sec = l[1 : len(l)-1]
			u[sec] = map[string][]string{}
		case strings.HasSuffix(l, `\`):
			t.Fatalf("%s:%d: continuation lines are not expected", file, n)
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok || sec == "" {
				t.Fatalf("%s:%d: not key=value in a section: %q", file, n, l)
			}
			u[sec][k] = append(u[sec][k], v)
		}
	}
	return u
}

func (u unitFile) one(t *testing.T, sec, key string) string {
	t.Helper()
	v := u[sec][key]
	if len(v) != 1 {
		t.Errorf("[%s] %s: want one value, got %q", sec, key, v)
		return ""
	}
	return v[0]
}

// makeInstall reads the Makefile's `install` target: destination → source, and the
// default PREFIX.
func makeInstall(t *testing.T) (files map[string]string, prefix string) {
	t.Helper()
	data, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^PREFIX\s*\?=\s*(\S+)`).FindSubmatch(data); m != nil {
		prefix = string(m[1])
	}
	files = map[string]string{}
	re := regexp.MustCompile(`(?m)^\tinstall -D -m \d+ (\S+) \$\(DESTDIR\)(\S+)$`)
	for _, m := range re.FindAllSubmatch(data, -1) {
		dest := strings.ReplaceAll(string(m[2]), "$(PREFIX)", prefix)
		files[dest] = string(m[1])
	}
	return files, prefix
}

func TestMakeInstallSources(t *testing.T) {
	files, prefix := makeInstall(t)
	if prefix == "" {
		t.Fatalf("no PREFIX ?= default in the Makefile")
	}
	for dest, want := range map[string]string{unitDest: "install/systemd/kfault.service", nodeConfDest: "install/nri/10-kfault.conf"} {
		if files[dest] != want {
			t.Errorf("make install should install %s as %s; the Makefile has %q", want, dest, files[dest])
		}
	}
	for dest, src := range files {
		if !strings.HasPrefix(src, "install/") {
			continue // build output
		}
		if _, err := os.Stat(filepath.Join("..", src)); err != nil {
			t.Errorf("make install copies %s to %s: %v", src, dest, err)
		}
	}
}

func TestSystemdUnit(t *testing.T) {
	const file = "systemd/kfault.service"
	u := parseUnit(t, file)
	files, prefix := makeInstall(t)

	for _, sec := range []string{"Unit", "Service", "Install"} {
		if u[sec] == nil {
			t.Fatalf("no [%s] section", sec)
		}
	}
	for _, key := range []string{"After", "Wants"} {
		if !slices.Contains(strings.Fields(strings.Join(u["Unit"][key], " ")), "containerd.service") {
			t.Errorf("[Unit] %s must name containerd.service", key)
		}
	}
	// The two ways of running on a host exclude each other.
	if got := u.one(t, "Unit", "ConditionPathExists"); got != "!"+path.Join(nriPluginPath, nriPluginFile) {
		t.Errorf("ConditionPathExists = %q, want !%s", got, path.Join(nriPluginPath, nriPluginFile))
	}
	if got := u.one(t, "Service", "Restart"); got != "always" {
		t.Errorf("Restart = %q, want always", got)
	}
	if got := u.one(t, "Install", "WantedBy"); got != "multi-user.target" {
		t.Errorf("WantedBy = %q", got)
	}

	argv := strings.Fields(u.one(t, "Service", "ExecStart"))
	if len(argv) < 2 || argv[0] != path.Join(prefix, "bin/kfault") || argv[1] != "nri" {
		t.Fatalf("ExecStart = %q, want %s nri ...", argv, path.Join(prefix, "bin/kfault"))
	}
	if _, ok := files[argv[0]]; !ok {
		t.Errorf("ExecStart runs %s, which make install does not install", argv[0])
	}
	cfg := flagValue(argv, "config")
	if cfg == "" {
		t.Errorf("ExecStart has no --config")
	} else if src, ok := files[cfg]; !ok {
		t.Errorf("--config %s is not a file make install installs", cfg)
	} else {
		data, err := os.ReadFile(filepath.Join("..", src))
		if err != nil {
			t.Fatal(err)
		}
		parseNodeConfig(t, src, string(data))
	}

	// Privileges: exactly CAP_BPF and CAP_PERFMON, the memlock limit raised instead
	// of CAP_SYS_RESOURCE, and no new privileges.
	if got := capSet(strings.Fields(u.one(t, "Service", "CapabilityBoundingSet"))); !slices.Equal(got, []string{"CAP_BPF", "CAP_PERFMON"}) {
		t.Errorf("CapabilityBoundingSet = %v, want CAP_BPF CAP_PERFMON", got)
	}
	for key, want := range map[string]string{
		"LimitMEMLOCK":    "infinity",
		"NoNewPrivileges": "yes",
		"StateDirectory":  "kfault", // = /var/lib/kfault, the default stateDir
		"ProtectSystem":   "strict",
	} {
		if got := u.one(t, "Service", key); got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	if "/var/lib/"+u.one(t, "Service", "StateDirectory") != plugin.DefaultStateDir {
		t.Errorf("StateDirectory is not the default stateDir %s", plugin.DefaultStateDir)
	}
	// ProtectSystem=strict: the control socket's directory must be the runtime
	// directory, the only writable place under /run.
	if "/run/"+u.one(t, "Service", "RuntimeDirectory") != path.Dir(plugin.DefaultControlSocket) {
		t.Errorf("RuntimeDirectory is not the default controlSocket's directory %s", path.Dir(plugin.DefaultControlSocket))
	}
	// These would break kfault (see the comments in the unit).
	for _, key := range []string{"ProtectKernelTunables", "ProtectProc", "ProcSubset", "PrivateNetwork", "User", "DynamicUser", "PrivateUsers"} {
		if v, ok := u["Service"][key]; ok {
			t.Errorf("%s=%v would break kfault", key, v)
		}
	}
	filter := strings.Fields(strings.Join(u["Service"]["SystemCallFilter"], " "))
	for _, sc := range []string{"bpf", "perf_event_open"} {
		if len(filter) > 0 && !slices.Contains(filter, sc) {
			t.Errorf("SystemCallFilter %v does not allow %s", filter, sc)
		}
	}
}

// TestSystemdUnitVerifies runs `systemd-analyze verify` (offline) when it is
// installed, on a copy whose ExecStart points at an existing binary.
func TestSystemdUnitVerifies(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	data, err := os.ReadFile("systemd/kfault.service")
	if err != nil {
		t.Fatal(err)
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	data = regexp.MustCompile(`(?m)^ExecStart=\S+`).ReplaceAll(data, []byte("ExecStart="+sh))
	f := filepath.Join(t.TempDir(), "kfault.service")
	if err := os.WriteFile(f, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", "--man=no", f).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// Complaints about the unit (unknown keys, bad values) name it; other lines are
	// about the machine the test runs on.
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "kfault.service") {
			t.Errorf("systemd-analyze verify: %s", l)
		} else if strings.TrimSpace(l) != "" {
			t.Logf("systemd-analyze verify: %s", l)
		}
	}
}

// TestPluginFlags parses the arguments the systemd unit and the DaemonSet pass to `kfault
// nri` with that command's own flag set (plugin.NewFlagSet): an unknown flag, a bad value
// or a stray argument fails here rather than on a node.
func TestPluginFlags(t *testing.T) {
	ds := render(t, "kubernetes").DaemonSets[0]
	c := kfaultContainer(t, &ds)
	argvs := map[string][]string{
		"the systemd unit's ExecStart": strings.Fields(parseUnit(t, "systemd/kfault.service").one(t, "Service", "ExecStart")),
		"the DaemonSet's container":    append(slices.Clone(c.Command), c.Args...),
	}
	for who, argv := range argvs {
		if len(argv) < 2 || path.Base(argv[0]) != "kfault" || argv[1] != "nri" {
			t.Errorf("%s runs %q, want kfault nri ...", who, argv)
			continue
		}
		fs, flags := plugin.NewFlagSet("kfault nri")
		fs.SetOutput(io.Discard)
		if err := fs.Parse(argv[2:]); err != nil {
			t.Errorf("%s: kfault nri %q: %v", who, argv[2:], err)
			continue
		}
		if fs.NArg() != 0 {
			t.Errorf("%s: kfault nri refuses the arguments %q", who, fs.Args())
		}
		// Both pass a node config file.
		if fs.Lookup("config") == nil || flags.ConfigFile == "" {
			t.Errorf("%s: kfault nri %q sets no --config; the systemd unit and the DaemonSet pass one", who, argv[2:])
		}
	}
}

// ---------------------------------------------------------------------------
// helpers

// flagValue returns the value of --name or -name in argv ("--name v" or "--name=v").
func flagValue(argv []string, name string) string {
	for i, a := range argv {
		for _, p := range []string{"--" + name, "-" + name} {
			if a == p && i+1 < len(argv) {
				return argv[i+1]
			}
			if v, ok := strings.CutPrefix(a, p+"="); ok {
				return v
			}
		}
	}
	return ""
}

func capSet[T ~string](caps []T) []string {
	out := make([]string, 0, len(caps))
	for _, c := range caps {
		out = append(out, string(c))
	}
	slices.Sort(out)
	return slices.Compact(out)
}
