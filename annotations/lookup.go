package annotations

import (
	"fmt"
	"strings"
)

// Annotation keys. They follow the NRI convention of
// github.com/containerd/nri/pkg/plugin.GetEffectiveAnnotation.
const (
	// Key is the bare key: a container's own annotation (nerdctl run --annotation),
	// or, on a pod, the same as PodKey.
	Key = "faults.kfault.dev"
	// PodKey applies to every container of the pod without a container key.
	PodKey = Key + "/pod"
	// ContainerKeyPrefix + a container name applies to that container only.
	ContainerKeyPrefix = Key + "/container."
)

// ContainerKey returns the container-scoped key for the named container.
func ContainerKey(container string) string {
	return ContainerKeyPrefix + container
}

// Effective returns the annotation value that applies to the named container and
// the key it came from. The pod's annotations are searched first, in the order of
// NRI's plugin.GetEffectiveAnnotation:
//
//	faults.kfault.dev/container.<name>, faults.kfault.dev/pod, faults.kfault.dev
//
// then the container's own annotations in the same order (non-CRI containers, such
// as nerdctl's, have no pod and carry the bare key themselves).
//
// The NRI function is not called directly: it takes an *api.PodSandbox, whose
// package pulls ttrpc, protobuf and wazero into this dependency-free package, and
// it never looks at container annotations. Its lookup is three map reads.
func Effective(container string, podAnnotations, containerAnnotations map[string]string) (value, key string, ok bool) {
	keys := [...]string{ContainerKey(container), PodKey, Key}
	for _, annotations := range [...]map[string]string{podAnnotations, containerAnnotations} {
		for _, k := range keys {
			if v, found := annotations[k]; found {
				return v, k, true
			}
		}
	}
	return "", "", false
}

// ParseKey classifies an annotation key. ours is false for keys outside kfault's
// domain. For the container-scoped key, container is the container name. err is set
// for keys in kfault's domain that kfault does not understand (a typo such as
// faults.kfault.dev/containers.app), or for a key with a domain close to ours.
func ParseKey(key string) (container string, ours bool, err error) {
	switch {
	case key == Key || key == PodKey:
		return "", true, nil
	case strings.HasPrefix(key, ContainerKeyPrefix):
		name := strings.TrimPrefix(key, ContainerKeyPrefix)
		if name == "" {
			return "", true, fmt.Errorf("annotation %s: missing container name after %q", key, ContainerKeyPrefix)
		}
		return name, true, nil
	case strings.HasPrefix(key, Key+"/"):
		return "", true, fmt.Errorf("annotation %s: unknown key; use %s, %s or %s<container name>", key, Key, PodKey, ContainerKeyPrefix)
	}
	domain, _, _ := strings.Cut(key, "/")
	if domain != Key && (strings.Contains(domain, "kfault") || suggest(domain, []string{Key}) != "") {
		return "", true, fmt.Errorf("annotation %s: unknown domain %q (did you mean %q?)", key, domain, Key)
	}
	return "", false, nil
}
