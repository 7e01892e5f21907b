package install

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Rendered is the output of one kustomize build of kubernetes/, decoded into API types.
type Rendered struct {
	Namespaces      []corev1.Namespace
	ServiceAccounts []corev1.ServiceAccount
	ConfigMaps      []corev1.ConfigMap
	DaemonSets      []appsv1.DaemonSet
}

// Render builds the kustomization in dir, as `kubectl kustomize` does, and decodes every object
// strictly: an unknown or duplicate field, or a kind other than these four, is an error. The
// offline checks in install_test.go and the kubelet suite in the test VM read it.
func Render(dir string) (Rendered, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return Rendered{}, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var out Rendered
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			return Rendered{}, fmt.Errorf("%s: %w", r.CurId(), err)
		}
		var tm struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(y, &tm); err != nil {
			return Rendered{}, fmt.Errorf("%s: %w", r.CurId(), err)
		}
		var obj any
		switch tm.APIVersion + " " + tm.Kind {
		case "v1 Namespace":
			obj = appendZero(&out.Namespaces)
		case "v1 ServiceAccount":
			obj = appendZero(&out.ServiceAccounts)
		case "v1 ConfigMap":
			obj = appendZero(&out.ConfigMaps)
		case "apps/v1 DaemonSet":
			obj = appendZero(&out.DaemonSets)
		default:
			return Rendered{}, fmt.Errorf("unexpected object %s %s in the kustomization output", tm.APIVersion, tm.Kind)
		}
		if err := yaml.UnmarshalStrict(y, obj); err != nil {
			return Rendered{}, fmt.Errorf("%s %s does not decode strictly into %T: %w\n%s", tm.APIVersion, tm.Kind, obj, err, y)
		}
	}
	return out, nil
}

// appendZero appends a zero T to *s and returns a pointer to it, to decode into.
func appendZero[T any](s *[]T) *T {
	*s = append(*s, *new(T))
	return &(*s)[len(*s)-1]
}
