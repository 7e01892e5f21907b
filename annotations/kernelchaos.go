package annotations

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// KernelChaos API versions kfault converts from.
const (
	KernelChaosAPIVersion    = "chaos-mesh.org/v1alpha1"
	oldKernelChaosAPIVersion = "pingcap.com/v1alpha1" // Chaos Mesh before 1.0
)

// spec fields of a KernelChaos that select pods; kfault replaces them with the
// placement of the annotation.
var selectionFields = []string{"mode", "value", "selector", "containerNames", "remoteCluster"}

// ConvertKernelChaos reads a Chaos Mesh KernelChaos manifest (YAML or JSON) and
// returns the kfault annotation value (YAML) with the same fault, and notes for the
// user: what replaced mode and selector, and which fields were dropped or defaulted.
// Errors in spec.failKernRequest are reported with their manifest paths.
func ConvertKernelChaos(manifest []byte) (annotation string, notes []string, err error) {
	doc, err := decode(manifest)
	if err != nil {
		return "", nil, err
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return "", nil, fmt.Errorf("manifest: %s, want a KernelChaos object", describe(doc))
	}
	kind, _ := obj["kind"].(string)
	if kind != "KernelChaos" {
		return "", nil, fmt.Errorf("kind: %s, want KernelChaos", describeOrMissing(obj["kind"]))
	}
	switch apiVersion, _ := obj["apiVersion"].(string); apiVersion {
	case KernelChaosAPIVersion:
	case oldKernelChaosAPIVersion:
		notes = append(notes, fmt.Sprintf("apiVersion %s is the pre-1.0 Chaos Mesh group; its failKernRequest is the same", apiVersion))
	default:
		return "", nil, fmt.Errorf("apiVersion: %s, want %s", describeOrMissing(obj["apiVersion"]), KernelChaosAPIVersion)
	}
	spec, ok := obj["spec"].(map[string]any)
	if !ok {
		return "", nil, fmt.Errorf("spec: %s, want an object", describeOrMissing(obj["spec"]))
	}
	req, ok := spec["failKernRequest"].(map[string]any)
	if !ok {
		return "", nil, fmt.Errorf("spec.failKernRequest: %s, want an object", describeOrMissing(spec["failKernRequest"]))
	}

	fault := map[string]any{}
	for k, v := range req {
		fault[k] = v
	}
	// KernelChaos defaults: failtype is an int32 without omitempty (absent = 0), and
	// bpfki injects every time when the probability is 0.
	if _, ok := present(fault, "failtype"); !ok {
		fault["failtype"] = json.Number("0")
		notes = append(notes, "spec.failKernRequest.failtype is absent; KernelChaos treats that as 0 (slab), and so does this annotation")
	}
	if v, ok := present(fault, "probability"); ok && isZero(v) {
		delete(fault, "probability")
		notes = append(notes, "probability 0 means \"every time\" in KernelChaos (bpfki skips the check); the annotation leaves it out, which kfault reads as 100%")
	}
	if v, ok := present(fault, "times"); ok && isZero(v) {
		delete(fault, "times")
	}
	if h, ok := present(fault, "headers"); ok {
		delete(fault, "headers")
		notes = append(notes, fmt.Sprintf("headers %s dropped: kfault reads kernel types from BTF and needs no headers", compactJSON(h)))
	}
	if chain, ok := fault["callchain"].([]any); ok && len(chain) > 0 {
		last := len(chain) - 1
		if fr, ok := chain[last].(map[string]any); ok {
			if name, _ := fr["funcname"].(string); name == "" {
				if _, hasPred := present(fr, "predicate"); hasPred {
					return "", nil, fmt.Errorf("spec.failKernRequest.callchain[%d].funcname: empty; bpfki applies the predicate of a last frame without funcname to the fault function itself, which kfault does not support: move the condition to a named frame", last)
				}
			}
		}
	}
	if d, ok := present(spec, "duration"); ok {
		fault["duration"] = d
	}

	raw, err := json.Marshal(fault)
	if err != nil {
		return "", nil, fmt.Errorf("spec.failKernRequest: %v", err)
	}
	faults, err := Parse(string(raw))
	if err != nil {
		var fe Errors
		if errors.As(err, &fe) {
			out := make(Errors, len(fe))
			for i, e := range fe {
				prefix := "spec.failKernRequest"
				if e.Path == "duration" {
					prefix = "spec"
				}
				out[i] = &FieldError{Path: joinPath(prefix, e.Path), Reason: e.Reason}
			}
			return "", nil, out
		}
		return "", nil, err
	}

	notes = append(notes, selectionNote(spec))
	var ignored []string
	for k := range spec {
		if k != "failKernRequest" && k != "duration" && !contains(selectionFields, k) {
			ignored = append(ignored, "spec."+k)
		}
	}
	sort.Strings(ignored)
	if len(ignored) > 0 {
		notes = append(notes, "ignored (no kfault equivalent): "+strings.Join(ignored, ", "))
	}
	if _, ok := present(spec, "duration"); ok {
		notes = append(notes, fmt.Sprintf("spec.duration became duration: %s; kfault disarms the fault that long after the container starts", faults[0].Duration))
	}
	notes = append(notes, "kfault arms the fault when a container starts: adding the annotation to a running pod has no effect until its containers are recreated")
	return Encode(faults), notes, nil
}

func selectionNote(spec map[string]any) string {
	var b strings.Builder
	b.WriteString("KernelChaos ")
	mode, _ := spec["mode"].(string)
	if mode == "" {
		mode = "(unset)"
	}
	fmt.Fprintf(&b, "mode %s", mode)
	if v, ok := present(spec, "value"); ok {
		fmt.Fprintf(&b, " (value %s)", compactJSON(v))
	}
	if sel, ok := present(spec, "selector"); ok {
		fmt.Fprintf(&b, " with selector %s", compactJSON(sel))
	} else {
		b.WriteString(" without a selector")
	}
	b.WriteString(" is replaced by placing the annotation on the pods you choose: add it to their metadata.annotations (in a Deployment, spec.template.metadata.annotations) as ")
	if names, ok := spec["containerNames"].([]any); ok && len(names) > 0 {
		var keys []string
		for _, n := range names {
			if s, ok := n.(string); ok {
				keys = append(keys, ContainerKey(s))
			}
		}
		fmt.Fprintf(&b, "%s (spec.containerNames)", strings.Join(keys, ", "))
	} else {
		fmt.Fprintf(&b, "%s for every container, or %s<name> for one", PodKey, ContainerKeyPrefix)
	}
	return b.String()
}

func isZero(v any) bool {
	n, ok := v.(json.Number)
	if !ok {
		return false
	}
	f, err := n.Float64()
	return err == nil && f == 0
}

func compactJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func describeOrMissing(v any) string {
	switch v := v.(type) {
	case nil:
		return "missing"
	case string:
		return show(v)
	}
	return describe(v)
}
