package annotations

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

// docSeparatorRE matches a "---" document marker at the start of a line. YAML wants a
// space or the end of the line after it (\r\n too); the rest of the line belongs to the
// next document ("--- {failtype: 0}").
var docSeparatorRE = regexp.MustCompile(`(?m)^---(?:[ \t\r]+|$)`)

// SplitDocuments splits a YAML stream at its "---" lines and drops the blank
// documents (nothing but whitespace and comments). The documents share data's memory.
func SplitDocuments(data []byte) [][]byte {
	var docs [][]byte
	start := 0
	for _, m := range append(docSeparatorRE.FindAllIndex(data, -1), []int{len(data), len(data)}) {
		if d := data[start:m[0]]; !isBlank(d) {
			docs = append(docs, d)
		}
		start = m[1]
	}
	return docs
}

// isBlank reports whether a YAML document holds nothing but whitespace and comments.
func isBlank(doc []byte) bool {
	for line := range bytes.SplitSeq(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			return false
		}
	}
	return true
}

// IsManifest reports whether data is a Kubernetes manifest stream (its first
// document is an object with apiVersion and kind) rather than an annotation value.
func IsManifest(data []byte) bool {
	docs := SplitDocuments(data)
	if len(docs) == 0 {
		return false
	}
	obj, err := decodeObject(docs[0])
	if err != nil {
		return false
	}
	_, hasAPI := obj["apiVersion"].(string)
	_, hasKind := obj["kind"].(string)
	return hasAPI && hasKind
}

// decodeObject decodes one YAML or JSON document that must be an object. Unlike an
// annotation value, a manifest may repeat a key (the last one wins).
func decodeObject(doc []byte) (map[string]any, error) {
	j, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return nil, err
	}
	var obj map[string]any
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	if err := dec.Decode(&obj); err != nil {
		return nil, errors.New("not an object")
	}
	return obj, nil
}

// ManifestPod is a pod, or the pod template of a workload, found in Kubernetes
// manifests: what kfault needs to tell what each of its containers would get.
type ManifestPod struct {
	Name            string            // Kind/name of the object it is in, e.g. Deployment/web
	AnnotationsPath string            // where its annotations are in the object, e.g. spec.template.metadata.annotations
	Annotations     map[string]string // its annotations with a string value
	InitContainers  []string          // names, in the order of the spec
	Containers      []string
	// Invalid lists the annotations kfault cannot read: a kfault key whose value is
	// not a string, or annotations that are not a map. Paths start at AnnotationsPath.
	Invalid Errors
}

// ManifestPods finds the pods and pod templates in a stream of Kubernetes manifests:
// Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job,
// CronJob, PodTemplate, and List of them; other kinds hold none. A document that is
// not an object, or that is a Chaos Mesh KernelChaos (kfault convert turns those into
// an annotation), is an error; the pods of the other documents are still returned,
// and err joins one error per bad document.
func ManifestPods(data []byte) ([]ManifestPod, error) {
	var pods []ManifestPod
	var errs []error
	for i, doc := range SplitDocuments(data) {
		obj, err := decodeObject(doc)
		if err != nil {
			errs = append(errs, fmt.Errorf("document %d: not a Kubernetes object: %v", i+1, err))
			continue
		}
		ps, err := objectPods(obj)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		pods = append(pods, ps...)
	}
	return pods, errors.Join(errs...)
}

// objectPods finds the pod templates in one Kubernetes object.
func objectPods(obj map[string]any) ([]ManifestPod, error) {
	kind, _ := obj["kind"].(string)
	name, _ := field(obj, "metadata", "name").(string)
	if name == "" {
		name = "(unnamed)"
	}
	id := kind + "/" + name
	tmpl := func(path ...string) []ManifestPod {
		t, _ := field(obj, path...).(map[string]any)
		return []ManifestPod{manifestPod(id, t, strings.Join(append(path, "metadata", "annotations"), "."))}
	}
	switch kind {
	case "Pod":
		return []ManifestPod{manifestPod(id, obj, "metadata.annotations")}, nil
	case "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job":
		return tmpl("spec", "template"), nil
	case "CronJob":
		return tmpl("spec", "jobTemplate", "spec", "template"), nil
	case "PodTemplate":
		return tmpl("template"), nil
	case "List":
		items, _ := obj["items"].([]any)
		var out []ManifestPod
		for _, it := range items {
			if m, ok := it.(map[string]any); ok {
				ps, err := objectPods(m)
				if err != nil {
					return nil, err
				}
				out = append(out, ps...)
			}
		}
		return out, nil
	case "KernelChaos":
		return nil, fmt.Errorf("%s is a Chaos Mesh KernelChaos; run 'kfault convert' on it to get the annotation", id)
	}
	return nil, nil
}

// manifestPod reads a pod, or a pod template, whose annotations are at where.
func manifestPod(name string, pod map[string]any, where string) ManifestPod {
	p := ManifestPod{Name: name, AnnotationsPath: where, Annotations: map[string]string{}}
	switch raw := field(pod, "metadata", "annotations").(type) {
	case nil:
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(raw)) {
			s, isString := raw[k].(string)
			if !isString {
				if _, ours, _ := ParseKey(k); ours {
					p.Invalid = append(p.Invalid, &FieldError{Path: fmt.Sprintf("%s[%q]", where, k), Reason: "the value must be a string (quote it, or use a YAML block scalar: |)"})
				}
				continue
			}
			p.Annotations[k] = s
		}
	default:
		p.Invalid = append(p.Invalid, &FieldError{Path: where, Reason: "must be a map of strings"})
	}
	spec, _ := pod["spec"].(map[string]any)
	p.InitContainers = containerNames(spec, "initContainers")
	p.Containers = containerNames(spec, "containers")
	return p
}

func containerNames(spec map[string]any, list string) []string {
	items, _ := spec[list].([]any)
	var names []string
	for _, c := range items {
		if n, ok := field(c, "name").(string); ok && n != "" {
			names = append(names, n)
		}
	}
	return names
}

// field walks nested objects along path; nil when something on the way is missing.
func field(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}
