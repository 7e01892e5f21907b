package annotations

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Select says which of the containers carrying a fault get it: a share of the pods (Percent)
// or the StatefulSet pods with the given ordinals (Ordinals). Exactly one of the two is set.
// Every container decides alone, at admission, from its own identity (Target): there is no
// coordination between pods, so a percent is a per-pod draw, not an exact count.
type Select struct {
	Percent  float64 // in (0, 100]; 0 when Ordinals is set
	Ordinals []int   // StatefulSet ordinals, as written; nil when Percent is set
	Seed     string  // varies the percent draw; "" = no seed. An integer seed is kept as its decimal text.
}

// Limits on select.
const (
	// MaxOrdinals bounds the entries of select.ordinals.
	MaxOrdinals = 1024
	// MaxOrdinal is the largest ordinal (a StatefulSet's replicas is an int32).
	MaxOrdinal = math.MaxInt32
	// MaxSeedBytes bounds select.seed.
	MaxSeedBytes = 128
)

var selectFields = []string{"percent", "ordinals", "seed"}

var selectHints = map[string]string{
	"mode":  "KernelChaos's mode has no field here: write percent (fixed-percent, random-max-percent) or ordinals (a StatefulSet's pods); see 'kfault convert'",
	"value": "KernelChaos's value has no field here: write percent: N or ordinals: [...]",
}

// selection parses a fault's select object.
func (p *parser) selection(path string, v any) *Select {
	m, ok := v.(map[string]any)
	if !ok {
		p.errorf(path, "%s, want an object: {percent: P} or {ordinals: [N, ...]}", describe(v))
		return nil
	}
	before := len(p.errs)
	p.unknownFields(path, m, selectFields, selectHints)
	s := &Select{}
	pv, hasPercent := present(m, "percent")
	ov, hasOrdinals := present(m, "ordinals")
	sv, hasSeed := present(m, "seed")
	switch {
	case hasPercent && hasOrdinals:
		p.errorf(joinPath(path, "ordinals"), "cannot be combined with percent; set one of them")
	case !hasPercent && !hasOrdinals:
		p.errorf(joinPath(path, "percent"), "missing: set percent (a share of the pods, in (0, 100]) or ordinals (StatefulSet pod ordinals)")
	case hasOrdinals && hasSeed:
		p.errorf(joinPath(path, "seed"), "only valid with percent: ordinals name the pods, nothing is drawn")
	}
	if hasPercent {
		s.Percent = p.percent(joinPath(path, "percent"), pv)
	}
	if hasOrdinals {
		s.Ordinals = p.ordinals(joinPath(path, "ordinals"), ov)
	}
	if hasSeed {
		s.Seed = p.seed(joinPath(path, "seed"), sv)
	}
	if len(p.errs) > before {
		return nil
	}
	return s
}

// percent reads a number of percent in (0, 100]: probability, select.percent.
func (p *parser) percent(path string, v any) float64 {
	n, ok := v.(json.Number)
	if !ok {
		p.errorf(path, "%s, want a number of percent in (0, 100]", describe(v))
		return 0
	}
	x, err := strconv.ParseFloat(n.String(), 64)
	if err != nil || !(x > 0 && x <= 100) {
		p.errorf(path, "%s is out of range (0, 100]", n)
		return 0
	}
	return x
}

func (p *parser) ordinals(path string, v any) []int {
	list, ok := v.([]any)
	if !ok {
		p.errorf(path, "%s, want a list of StatefulSet pod ordinals, like [0, 2]", describe(v))
		return nil
	}
	switch {
	case len(list) == 0:
		p.errorf(path, "empty list: want at least one ordinal")
		return nil
	case len(list) > MaxOrdinals:
		p.errorf(path, "%d ordinals, at most %d allowed", len(list), MaxOrdinals)
		return nil
	}
	out := make([]int, 0, len(list))
	seen := map[int]bool{}
	for i, item := range list {
		ip := indexPath(path, i)
		n, ok := item.(json.Number)
		if !ok {
			p.errorf(ip, "%s, want a whole number >= 0", describe(item))
			continue
		}
		o, err := strconv.ParseInt(n.String(), 10, 64)
		switch {
		case err != nil:
			p.errorf(ip, "%s is not a whole number", n)
		case o < 0:
			p.errorf(ip, "%d must not be negative (StatefulSet ordinals start at 0)", o)
		case o > MaxOrdinal:
			p.errorf(ip, "%d is too large (at most %d)", o, MaxOrdinal)
		case seen[int(o)]:
			p.errorf(ip, "%d is listed twice", o)
		default:
			seen[int(o)] = true
			out = append(out, int(o))
		}
	}
	return out
}

// seed reads a string, or an integer kept as its decimal text (seed: 7 and seed: "7" draw the
// same).
func (p *parser) seed(path string, v any) string {
	const want = "want a string or a whole number"
	var s string
	switch v := v.(type) {
	case string:
		s = v
	case json.Number:
		i, err := strconv.ParseInt(v.String(), 10, 64)
		if err != nil {
			p.errorf(path, "%s is not a whole number from %d to %d; write it as a string", v, math.MinInt64, math.MaxInt64)
			return ""
		}
		return strconv.FormatInt(i, 10)
	default:
		p.errorf(path, "%s; %s", describe(v), want)
		return ""
	}
	switch {
	case s == "":
		p.errorf(path, "must not be empty (omit it for no seed)")
	case len(s) > MaxSeedBytes:
		p.errorf(path, "%s is %d bytes long, at most %d allowed", show(s), len(s), MaxSeedBytes)
	default:
		for i := 0; i < len(s); i++ {
			if c := s[i]; c < ' ' || c > '~' {
				p.errorf(path, "%s contains a non-printable or non-ASCII byte at offset %d", show(s), i)
				return ""
			}
		}
		return s
	}
	return ""
}

// String renders the rule for people: "30% of pods", "30% of pods (seed \"a\")",
// "StatefulSet ordinals 0, 2".
func (s Select) String() string {
	if len(s.Ordinals) > 0 {
		return "StatefulSet pods with ordinals " + joinInts(s.Ordinals, ", ")
	}
	out := formatFloat(s.Percent) + "% of pods"
	if s.Seed != "" {
		out += " (seed " + strconv.Quote(s.Seed) + ")"
	}
	return out
}

// Explain says how the rule decides, for kfault validate.
func (s Select) Explain() string {
	if len(s.Ordinals) > 0 {
		return fmt.Sprintf("armed only in pods whose name ends in -N with N in [%s] (a StatefulSet's pods); "+
			"a pod whose name has no trailing -N is refused", joinInts(s.Ordinals, ", "))
	}
	seed := "no seed"
	if s.Seed != "" {
		seed = "seed " + strconv.Quote(s.Seed)
	}
	return fmt.Sprintf("armed in a pod when the draw SHA-256(pod UID, fault index, %s) mapped to [0, 100) is below %s: "+
		"about %s%% of the pods, each deciding alone, the same way every time", seed, formatFloat(s.Percent), formatFloat(s.Percent))
}

func joinInts(xs []int, sep string) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.Itoa(x)
	}
	return strings.Join(parts, sep)
}

// Target is what a container's selection is decided from.
type Target struct {
	// UID is the identity of the percent draw: the pod UID for a CRI container, the
	// containerd container ID for a container outside CRI (nerdctl, ctr).
	UID string
	// Name holds the ordinal, as its trailing -N: the pod name for a CRI container, the
	// container's name (nerdctl's name label, else its ID) outside CRI.
	Name string
}

// Decision is how one fault's select rule came out for one container.
type Decision struct {
	Fault    int    `json:"fault"` // index of the fault in the annotation
	Selected bool   `json:"selected"`
	Rule     string `json:"rule"` // "percent" or "ordinals"; "" for a fault without select
	// percent: the threshold, the identity drawn from, the first 8 bytes of the digest (hex)
	// and the draw in [0, 100) they map to. Selected when Draw < Percent.
	Percent  float64 `json:"percent,omitempty"`
	Identity string  `json:"identity,omitempty"`
	Seed     string  `json:"seed,omitempty"`
	Hash     string  `json:"hash,omitempty"`
	Draw     float64 `json:"draw,omitempty"`
	// ordinals: the pod's ordinal and the ordinals wanted.
	Ordinal  *int   `json:"ordinal,omitempty"`
	Ordinals []int  `json:"ordinals,omitempty"`
	Reason   string `json:"reason"` // one line for people
}

// SelectHashPrefix starts the bytes hashed for a percent draw; the version changes if the
// layout ever does.
const SelectHashPrefix = "kfault.select.v1"

// SelectDraw is the percent draw of one fault for one identity: SHA-256 of
//
//	"kfault.select.v1"                  16 bytes of ASCII
//	uint32 big-endian len(uid), uid
//	uint32 big-endian fault             the fault's index in the annotation, from 0
//	uint32 big-endian len(seed), seed   "" when there is no seed
//
// whose first 8 bytes, read as a big-endian uint64 and shifted right by 11, give k < 2^53;
// the draw is k / 2^53 * 100 in float64 arithmetic, in [0, 100). A fault with percent P is
// armed when draw < P. It returns the 8 bytes as hex and the draw.
func SelectDraw(uid string, fault int, seed string) (hash string, draw float64) {
	b := make([]byte, 0, len(SelectHashPrefix)+12+len(uid)+len(seed))
	b = append(b, SelectHashPrefix...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(uid)))
	b = append(b, uid...)
	b = binary.BigEndian.AppendUint32(b, uint32(fault))
	b = binary.BigEndian.AppendUint32(b, uint32(len(seed)))
	b = append(b, seed...)
	sum := sha256.Sum256(b)
	k := binary.BigEndian.Uint64(sum[:8]) >> 11
	return hex.EncodeToString(sum[:8]), float64(k) / (1 << 53) * 100
}

// ordinalRE is a trailing -N, N without leading zeros (a StatefulSet pod's name).
var ordinalRE = regexp.MustCompile(`-(0|[1-9][0-9]{0,9})$`)

// Ordinal reads the ordinal from a StatefulSet pod's name (web-2 → 2).
func Ordinal(name string) (int, bool) {
	m := ordinalRE.FindStringSubmatch(name)
	if m == nil {
		return 0, false
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil || n > MaxOrdinal {
		return 0, false
	}
	return int(n), true
}

// Decide applies each fault's select rule to one container: one Decision per fault, in order
// (a fault without select is selected). A rule that cannot be applied to t (ordinals for a
// name without a trailing -N, percent without an identity) is an error naming the field, e.g.
// `[1].select.ordinals: ...` (no index for a single fault, as the engine's errors).
func Decide(faults []Fault, t Target) ([]Decision, error) {
	out := make([]Decision, len(faults))
	var errs Errors
	for i, f := range faults {
		d := Decision{Fault: i, Selected: true}
		prefix := ""
		if len(faults) > 1 {
			prefix = indexPath("", i)
		}
		s := f.Select
		switch {
		case s == nil:
			d.Reason = "no select: every container"
		case len(s.Ordinals) > 0:
			d.Rule, d.Ordinals = "ordinals", s.Ordinals
			n, ok := Ordinal(t.Name)
			if !ok {
				errs = append(errs, &FieldError{Path: joinPath(prefix, "select.ordinals"),
					Reason: fmt.Sprintf("pod name %s has no trailing -N ordinal; ordinals select StatefulSet pods (name-0, name-1, ...): use percent for other pods", show(t.Name))})
				continue
			}
			d.Ordinal = &n
			d.Selected = slices.Contains(s.Ordinals, n)
			in := "in"
			if !d.Selected {
				in = "not in"
			}
			d.Reason = fmt.Sprintf("ordinal %d (from %s) %s [%s]", n, show(t.Name), in, joinInts(s.Ordinals, ", "))
		default:
			if t.UID == "" {
				errs = append(errs, &FieldError{Path: joinPath(prefix, "select.percent"),
					Reason: "the container has no identity (pod UID or container ID) to draw from"})
				continue
			}
			d.Rule, d.Percent, d.Identity, d.Seed = "percent", s.Percent, t.UID, s.Seed
			d.Hash, d.Draw = SelectDraw(t.UID, i, s.Seed)
			d.Selected = d.Draw < s.Percent
			cmp := "<"
			if !d.Selected {
				cmp = ">="
			}
			d.Reason = fmt.Sprintf("draw %s %s %s (hash %s of %s)", strconv.FormatFloat(d.Draw, 'f', 4, 64), cmp, formatFloat(s.Percent), d.Hash, show(t.UID))
		}
		out[i] = d
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return out, nil
}

// Selected returns the indexes of the selected faults.
func Selected(ds []Decision) []int {
	var out []int
	for _, d := range ds {
		if d.Selected {
			out = append(out, d.Fault)
		}
	}
	return out
}
