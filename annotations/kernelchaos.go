package annotations

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
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
				// bpfki applies the predicate of a last frame without funcname to the fault
				// function itself; in kfault that is a frame on the hooked function, whose
				// predicate reads the function's own arguments.
				if p, ok := kernelChaosFailType(fault["failtype"]).Point(); ok && len(p.Functions) == 1 {
					fr["funcname"] = p.Functions[0]
					notes = append(notes, fmt.Sprintf("spec.failKernRequest.callchain[%d] has no funcname: bpfki applies its predicate to the fault function itself, so the annotation names it (%s); kfault evaluates it on that function's own arguments (mechanism fmod_ret)", last, p.Functions[0]))
				}
			}
		}
	}
	if d, ok := present(spec, "duration"); ok {
		fault["duration"] = d
	}
	sel, modeNote, err := convertMode(spec)
	if err != nil {
		return "", nil, err
	}
	if sel != nil {
		fault["select"] = sel
	}

	f, err := FromFields(fault)
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

	notes = append(notes, modeNote, selectionNote(spec))
	if f.FailType != Alloc {
		notes = append(notes, stockKernelNote(f.FailType))
	}
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
		notes = append(notes, fmt.Sprintf("spec.duration became duration: %s; kfault disarms the fault that long after the container starts", f.Duration))
	}
	notes = append(notes, "kfault arms the fault when a container starts: adding the annotation to a running pod has no effect until its containers are recreated")
	return Encode([]Fault{f}), notes, nil
}

// kernelChaosFailType reads a failtype as decoded from the manifest (a JSON number or an int);
// -1 when it is neither, which FromFields then reports.
func kernelChaosFailType(v any) FailType {
	switch n := v.(type) {
	case json.Number:
		if i, err := n.Int64(); err == nil {
			return FailType(i)
		}
	case int:
		return FailType(n)
	case int64:
		return FailType(n)
	case float64:
		if n == float64(int(n)) {
			return FailType(int(n))
		}
	}
	return -1
}

// stockKernelNote says where a KernelChaos failtype cannot work, and what does there: the fault
// points of failtypes 0-2 need error injection, which distro kernels leave out.
func stockKernelNote(t FailType) string {
	p, _ := t.Point()
	return fmt.Sprintf("failtype %d (%s) overrides %s, which needs a kernel built with CONFIG_FUNCTION_ERROR_INJECTION "+
		"(and %s on 6.11+): Debian's, Fedora's and Flatcar's are not. Where `kfault check` on the node says failtype %d "+
		"cannot work, failtype: alloc (kfault's failtype 3, not KernelChaos's) fails the kernel's object allocations "+
		"with -ENOMEM through LSM hooks, with the same call chain", int(t), p.Name, p.Functions[0], p.Config, int(t))
}

// Why KernelChaos's one and fixed have no exact equivalent, for their notes.
const exactCountNote = "each pod decides alone when its containers start, from its own UID or name, without knowing the other replicas, " +
	"so an exact count of pods needs a controller that sees them all (as Chaos Mesh's does)"

// convertMode maps spec.mode and spec.value to a select object (nil: every pod that carries
// the annotation) and a note that says how.
func convertMode(spec map[string]any) (sel map[string]any, note string, err error) {
	mode, _ := spec["mode"].(string)
	value, hasValue := present(spec, "value")
	valueText := ""
	if s, ok := value.(string); ok {
		valueText = strings.TrimSpace(s)
	} else if n, ok := value.(json.Number); ok {
		valueText = n.String()
	}
	if hasValue && valueText == "" {
		return nil, "", fmt.Errorf("spec.value: %s, want a number in a string, like \"30\"", describe(value))
	}
	percent := func() (float64, error) {
		x, perr := strconv.ParseFloat(valueText, 64)
		if !hasValue || perr != nil || !(x > 0 && x <= 100) {
			return 0, fmt.Errorf("spec.value: %s, want the percent of mode %s, in (0, 100]", describeOrMissing(value), mode)
		}
		return x, nil
	}
	switch mode {
	case "all":
		return nil, "KernelChaos mode all: every pod that carries the annotation gets the fault, which is what kfault does without select", nil
	case "", "one":
		if mode == "" {
			mode = "(unset; Chaos Mesh requires one)"
		}
		return nil, fmt.Sprintf("KernelChaos mode %s has no exact equivalent, and the annotation arms every pod it is on: %s. "+
			"For a StatefulSet, select: {ordinals: [0]} arms exactly its pod -0; for a known replica count R, select: {percent: 100/R} "+
			"is the nearest share (for 10 replicas, one ≈ percent: 10: one pod on average)", mode, exactCountNote), nil
	case "fixed":
		n, perr := strconv.ParseUint(valueText, 10, 31)
		if !hasValue || perr != nil || n == 0 {
			return nil, "", fmt.Errorf("spec.value: %s, want the number of pods of mode fixed, a whole number from 1", describeOrMissing(value))
		}
		replicas := uint64(10)
		for replicas <= n {
			replicas *= 10
		}
		return nil, fmt.Sprintf("KernelChaos mode fixed (value %d) has no exact equivalent, and the annotation arms every pod it is on: %s. "+
			"For a StatefulSet, select: {ordinals: %s} arms exactly %d pods; for a known replica count R, select: {percent: 100*%d/R} "+
			"is the nearest share (for %d replicas, fixed %d ≈ percent: %s: %d pods on average)",
			n, exactCountNote, ordinalsUpTo(n), n, n, replicas, n, formatFloat(float64(100*n)/float64(replicas)), n), nil
	case "fixed-percent":
		p, err := percent()
		if err != nil {
			return nil, "", err
		}
		return map[string]any{"percent": json.Number(formatFloat(p))}, fmt.Sprintf("KernelChaos mode fixed-percent (value %s) became select: {percent: %s}: "+
			"each pod is in when the hash of its UID falls below %s%%, so about %s%% of the pods get the fault, not exactly that share: %s",
			valueText, formatFloat(p), formatFloat(p), formatFloat(p), exactCountNote), nil
	case "random-max-percent":
		p, err := percent()
		if err != nil {
			return nil, "", err
		}
		return map[string]any{"percent": json.Number(formatFloat(p))}, fmt.Sprintf("KernelChaos mode random-max-percent (value %s) became select: {percent: %s}, "+
			"but the draw is per pod, not one draw per experiment: KernelChaos draws one share in [0, %s%%] for the whole experiment, "+
			"kfault puts each pod in when the hash of its UID falls below %s%%, so about %s%% of the pods get the fault "+
			"(KernelChaos's average share is %s%%: write percent: %s for the same average)",
			valueText, formatFloat(p), formatFloat(p), formatFloat(p), formatFloat(p), formatFloat(p/2), formatFloat(p/2)), nil
	}
	return nil, "", fmt.Errorf("spec.mode: %s is not a KernelChaos mode (one, all, fixed, fixed-percent, random-max-percent)", describeOrMissing(spec["mode"]))
}

// ordinalsUpTo writes the ordinals 0..n-1 as a YAML list, shortened past a few.
func ordinalsUpTo(n uint64) string {
	if n <= 5 {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = strconv.Itoa(i)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	return fmt.Sprintf("[0, 1, ..., %d]", n-1)
}

func selectionNote(spec map[string]any) string {
	var b strings.Builder
	b.WriteString("KernelChaos ")
	if sel, ok := present(spec, "selector"); ok {
		fmt.Fprintf(&b, "selector %s", compactJSON(sel))
	} else {
		b.WriteString("pod selection (no selector given)")
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
