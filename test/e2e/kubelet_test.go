package e2e

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kfault/kfault/install"
	"github.com/kfault/kfault/test/e2e/vmtest"
	"github.com/kfault/kfault/test/images/oci"
)

// The kubelet suite: pods as users apply them, through a real kubelet (standalone, static pods:
// test/vm/build-kubelet pins its version), instead of crictl. The kubelet sets the pod's cgroup
// parent, the io.kubernetes.* labels and annotations and the sandbox config, restarts containers
// and runs init containers.

// kubeletNamespace is the static pods' namespace.
const kubeletNamespace = "kubelet-e2e"

// staticPod is a host-network static pod of the given containers.
func staticPod(name string, annotations map[string]string, containers ...corev1.Container) *corev1.Pod {
	grace := int64(1)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: kubeletNamespace, Annotations: annotations},
		Spec:       corev1.PodSpec{HostNetwork: true, Containers: containers, TerminationGracePeriodSeconds: &grace},
	}
}

// busybox is a container of the test busybox image running command; privileged for mounts.
func busybox(name string, privileged bool, command []string) corev1.Container {
	c := corev1.Container{Name: name, Image: vmtest.BusyboxImage, ImagePullPolicy: corev1.PullNever, Command: command}
	if privileged {
		c.SecurityContext = &corev1.SecurityContext{Privileged: &privileged}
	}
	return c
}

// checkKubeletCgroup fails unless the container runs in a pod cgroup the kubelet made
// (cgroupfs driver: /kubepods/<qos>/pod<uid>/<container id>).
func checkKubeletCgroup(t *testing.T, id string) {
	t.Helper()
	cg := vmtest.CgroupOf(t, vmtest.ContainerPid(t, id))
	if !strings.HasPrefix(cg, "/sys/fs/cgroup/kubepods/") || filepath.Base(cg) != id {
		t.Errorf("container %s runs in %s: want a kubelet pod cgroup, /sys/fs/cgroup/kubepods/.../pod<uid>/%s", id, cg, id)
	}
}

// startKubeletAndPlugin starts containerd, a kfault nri and a kubelet, named after name, on a
// kernel that can inject faults.
func startKubeletAndPlugin(t *testing.T, name string) (*vmtest.Plugin, *vmtest.Kubelet) {
	t.Helper()
	vmtest.RequireKubelet(t)
	vmtest.RequireInjection(t)
	vmtest.Containerd(t)
	return vmtest.StartPlugin(t, "kubelet-"+name, vmtest.PluginOptions{}), vmtest.StartKubelet(t, name)
}

// TestKubeletSeedMount is the seed's mount example as a static pod: the annotated container's
// mounts fail with ENOMEM and its umounts with EINVAL; its sidecar and a bystander pod mount.
func TestKubeletSeedMount(t *testing.T) {
	p, k := startKubeletAndPlugin(t, "seed")
	devs := map[string]string{}
	for _, c := range []string{"victim", "sidecar", "bystander"} {
		devs[c] = loopExt4(t, "kubelet-"+c)
	}
	k.AddPod(staticPod("seed", map[string]string{"faults.kfault.dev/container.victim": seedFault},
		busybox("victim", true, seedMountLoop(devs["victim"])),
		busybox("sidecar", true, seedMountLoop(devs["sidecar"]))))
	k.AddPod(staticPod("seed-bystander", nil, busybox("bystander", true, seedMountLoop(devs["bystander"]))))
	victim := k.WaitContainer("seed", "victim", 0, 3*time.Minute)
	sidecar := k.WaitContainer("seed", "sidecar", 0, 3*time.Minute)
	bystander := k.WaitContainer("seed-bystander", "bystander", 0, 3*time.Minute)
	checkKubeletCgroup(t, victim.ID)
	checkSeedMount(t, p, "seed-"+vmtest.NodeName, victim.ID, sidecar.ID, bystander.ID)
}

// TestKubeletLifecycle: an init container with its own container.<name> key, a container the
// kubelet restarts (restartPolicy Always, the process exits) and an exec into a running one all
// get their faults; an unannotated container of the same pod, an exec into it and a bystander
// pod do not.
func TestKubeletLifecycle(t *testing.T) {
	p, k := startKubeletAndPlugin(t, "lifecycle")
	// One try of mkdir; then the init container exits 0, the restarter exits 1 (the kubelet
	// restarts it after its 10s back-off) and the others sleep.
	oneTry := `if mkdir /tmp/try1; then echo "try 1 ok"; else echo "try 1 FAILED"; fi`
	pod := staticPod("life", map[string]string{
		"faults.kfault.dev/container.init":      mkdirEACCES,
		"faults.kfault.dev/container.victim":    mkdirEACCES,
		"faults.kfault.dev/container.restarter": mkdirEACCES,
	},
		busybox("victim", false, vmtest.MkdirLoop(1, false, "")),
		busybox("restarter", false, []string{"sh", "-c", oneTry + "; sleep 1; exit 1"}),
		busybox("neighbour", false, vmtest.MkdirLoop(1, false, "")))
	pod.Spec.InitContainers = []corev1.Container{busybox("init", false, []string{"sh", "-c", oneTry})}
	k.AddPod(pod)
	k.AddPod(staticPod("life-bystander", nil, busybox("bystander", false, vmtest.MkdirLoop(1, false, ""))))

	want := func(what, id string, fail bool) {
		t.Helper()
		tries := vmtest.WaitTries(t, id, 1, 2*time.Minute)
		if got := vmtest.Failed(tries) == len(tries); got != fail {
			t.Errorf("%s: mkdir %s, want it to fail: %v\n%s", what, vmtest.Summary(tries), fail, vmtest.Logs(t, id))
		}
	}
	want("init container", k.WaitContainer("life", "init", 0, 3*time.Minute).ID, true)
	victim := k.WaitContainer("life", "victim", 0, 3*time.Minute)
	neighbour := k.WaitContainer("life", "neighbour", 0, 3*time.Minute)
	bystander := k.WaitContainer("life-bystander", "bystander", 0, 3*time.Minute)
	want("victim", victim.ID, true)
	want("neighbour", neighbour.ID, false)
	want("bystander pod", bystander.ID, false)
	checkKubeletCgroup(t, victim.ID)
	want("restarter, first run", k.WaitContainer("life", "restarter", 0, time.Minute).ID, true)
	want("restarter, restarted by the kubelet", k.WaitContainer("life", "restarter", 1, 2*time.Minute).ID, true)
	if n := p.Count("armed"); n < 4 {
		t.Errorf("%d armed lines in the plugin log, want at least 4: init, victim, restarter twice", n)
	}

	// An exec session (what kubectl exec starts) runs in the container's cgroup.
	exec := func(id string) (string, error) {
		return vmtest.Output("crictl", "exec", id, "mkdir", "/tmp/exec-dir")
	}
	if out, err := exec(victim.ID); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("exec mkdir in the victim: %v %q, want it to fail with Permission denied", err, out)
	}
	for what, id := range map[string]string{"neighbour": neighbour.ID, "bystander": bystander.ID} {
		if out, err := exec(id); err != nil {
			t.Errorf("exec mkdir in the %s: %v %s", what, err, out)
		}
	}
}

// kfaultImage is the image the DaemonSet's kustomization asks for: the kfault binary at
// /usr/local/bin/kfault and nothing else.
const kfaultImage = "kfault.test/kfault:e2e"

// importKfaultImage builds kfaultImage from the kfault binary under test and imports it into
// containerd's CRI namespace.
func importKfaultImage(t *testing.T) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, dir := range []string{"usr/", "usr/local/", "usr/local/bin/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: oci.Epoch}); err != nil {
			t.Fatal(err)
		}
	}
	if err := oci.AddFile(tw, vmtest.KfaultBinary(), "usr/local/bin/kfault"); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	layer, err := oci.Layer(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kfault.tar")
	if err := oci.WriteImage(path, kfaultImage, layer, nil); err != nil {
		t.Fatal(err)
	}
	vmtest.Run(t, "ctr", "-n", "k8s.io", "images", "import", "--local", path)
}

// daemonSetPod is install/kubernetes's DaemonSet pod template as a static pod: the same
// containers, security context, host namespaces and mounts. What a static pod cannot have is
// replaced: the ConfigMap volume by a host directory holding the rendered ConfigMap's config
// (with allowedNamespaces added), the image placeholder by kfaultImage, and the service account
// is dropped (the kubelet refuses a static pod that names one; kfault mounts no token anyway).
func daemonSetPod(t *testing.T, allowed string) *corev1.Pod {
	t.Helper()
	r, err := install.Render(filepath.Join(vmtest.RepoRoot(), "install/kubernetes"))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.DaemonSets) != 1 || len(r.ConfigMaps) != 1 {
		t.Fatalf("install/kubernetes: want one DaemonSet and one ConfigMap, got %d and %d", len(r.DaemonSets), len(r.ConfigMaps))
	}
	ds, cm := r.DaemonSets[0], r.ConfigMaps[0]
	spec := ds.Spec.Template.Spec.DeepCopy()
	configDir := filepath.Join("/run/kfault-e2e", "daemonset-config")
	os.RemoveAll(configDir)
	if err := os.MkdirAll(configDir, 0o755); err != nil {
		t.Fatal(err)
	}
	replaced := 0
	for i := range spec.Volumes {
		v := &spec.Volumes[i]
		if v.ConfigMap == nil {
			continue
		}
		if v.ConfigMap.Name != cm.Name {
			t.Fatalf("volume %s: ConfigMap %s, want %s", v.Name, v.ConfigMap.Name, cm.Name)
		}
		for _, item := range v.ConfigMap.Items {
			text := cm.Data[item.Key] + "\nallowedNamespaces: [" + allowed + "]\n"
			if err := os.WriteFile(filepath.Join(configDir, item.Path), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		dir := corev1.HostPathDirectory
		v.VolumeSource = corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: configDir, Type: &dir}}
		replaced++
	}
	if replaced != 1 {
		t.Fatalf("want one ConfigMap volume in the DaemonSet, found %d", replaced)
	}
	if !*spec.AutomountServiceAccountToken {
		spec.ServiceAccountName = ""
	}
	for i := range spec.Containers {
		spec.Containers[i].Image, spec.Containers[i].ImagePullPolicy = kfaultImage, corev1.PullNever
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: ds.Name, Namespace: ds.Namespace, Labels: ds.Spec.Template.Labels},
		Spec:       *spec,
	}
}

// TestKubeletDaemonSetPod runs kfault as install/'s DaemonSet pod would, from its pod template
// as a static pod (not privileged: the capabilities and host paths it lists): it registers with
// containerd over NRI, arms an annotated static pod while its neighbour and a bystander pod are
// untouched, answers `kfault status` through an exec (kubectl exec in the DaemonSet's docs), and
// when its pod stops the fault stops with it.
func TestKubeletDaemonSetPod(t *testing.T) {
	vmtest.RequireKubelet(t)
	vmtest.RequireInjection(t)
	vmtest.Containerd(t)
	importKfaultImage(t)
	os.RemoveAll("/var/lib/kfault") // the DaemonSet's state hostPath: start with no counters
	t.Cleanup(func() { os.RemoveAll("/var/lib/kfault") })
	k := vmtest.StartKubelet(t, "daemonset")
	kp := daemonSetPod(t, kubeletNamespace)
	k.AddPod(kp)
	added := time.Now()
	kfault := k.WaitContainer(kp.Name, "kfault", 0, 3*time.Minute)
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(vmtest.Logs(t, kfault.ID), `"msg":"registered"`) {
		if time.Now().After(deadline) {
			t.Fatalf("kfault in its DaemonSet pod did not register with containerd in 2m; its log:\n%s", vmtest.Logs(t, kfault.ID))
		}
		time.Sleep(time.Second)
	}
	t.Logf("kfault registered from its pod %.0fs after the manifest was written", time.Since(added).Seconds())
	if c := k.Containers(kp.Name); len(c) != 1 || c[0].State != "CONTAINER_RUNNING" {
		t.Fatalf("kfault's pod: want one running container, have %+v; its log:\n%s", c, vmtest.Logs(t, kfault.ID))
	}

	k.AddPod(staticPod("ds-victim", map[string]string{"faults.kfault.dev/container.victim": mkdirEACCES},
		busybox("victim", false, vmtest.MkdirLoop(1, false, "")),
		busybox("neighbour", false, vmtest.MkdirLoop(1, false, ""))))
	k.AddPod(staticPod("ds-bystander", nil, busybox("bystander", false, vmtest.MkdirLoop(1, false, ""))))
	victim := k.WaitContainer("ds-victim", "victim", 0, 3*time.Minute)
	neighbour := k.WaitContainer("ds-victim", "neighbour", 0, 3*time.Minute)
	bystander := k.WaitContainer("ds-bystander", "bystander", 0, 3*time.Minute)
	for what, c := range map[string]struct {
		id   string
		fail bool
	}{"victim": {victim.ID, true}, "neighbour": {neighbour.ID, false}, "bystander": {bystander.ID, false}} {
		tries := vmtest.WaitTries(t, c.id, 1, 2*time.Minute)
		if got := vmtest.Failed(tries) == len(tries); got != c.fail {
			t.Errorf("%s: mkdir %s, want it to fail: %v\nkfault's log:\n%s", what, vmtest.Summary(tries), c.fail, vmtest.Logs(t, kfault.ID))
		}
	}
	status, err := vmtest.Output("crictl", "exec", kfault.ID, "/usr/local/bin/kfault", "status")
	if err != nil || !strings.Contains(status, "ds-victim-"+vmtest.NodeName) {
		t.Errorf("kfault status in the DaemonSet pod: %v, want it to list ds-victim-%s:\n%s", err, vmtest.NodeName, status)
	}
	t.Logf("kfault status, run in kfault's pod:\n%s", status)

	// Faults stop when the pod stops: kfault's links belong to its process.
	k.RemovePod(kp.Name, 2*time.Minute)
	if out, err := vmtest.Output("crictl", "exec", victim.ID, "mkdir", "/tmp/after-kfault"); err != nil {
		t.Errorf("mkdir in the victim after kfault's pod stopped: %v %s, want it to succeed", err, out)
	}
}
