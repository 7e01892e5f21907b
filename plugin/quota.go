package plugin

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/kfault/kfault/annotations"
	"github.com/kfault/kfault/bpf"
)

// The engine's capacities are per node: every container's faults share MaxRules rules,
// MaxHooks hooked functions, MaxChains call chains and MaxFrames call-chain frames. Quotas
// keep one namespace from using them all up, which would make every other namespace's
// annotated containers fail to start (strict) or run without their faults (lenient).
//
// The default quota of a namespace is a fair share, 1/QuotaShare, of each capacity: a single
// namespace (or up to QuotaShare-1 of them) can never exhaust the engine; it takes QuotaShare
// namespaces at their full quota. For containers the share is taken of the rules: a namespace
// at its container quota, with the most faults an annotation may have (annotations.MaxFaults)
// in each container, holds at most 1/QuotaShare of MaxRules. An admin raises (or lowers) the
// quota of a namespace under quotas.namespaces; quotas above the engine's capacity are
// refused, since they could never be used.

// QuotaShare: a namespace's default quota is 1/QuotaShare of each engine capacity.
const QuotaShare = 4

// Quota limits what one namespace's armed containers may use of the engine. An absent field
// takes quotas.default's value (for quotas.default: the built-in default). 0 allows none:
// frames: 0 refuses call chains, containers: 0 every fault.
type Quota struct {
	// Containers with armed faults.
	Containers *int `json:"containers,omitempty"`
	// Hooks: distinct hooked functions (a failtype's or a function's).
	Hooks *int `json:"hooks,omitempty"`
	// Chains: distinct call chains (the list of frames, predicates included).
	Chains *int `json:"chains,omitempty"`
	// Frames: distinct call-chain frames (function, parameters, predicate).
	Frames *int `json:"frames,omitempty"`
}

// QuotasConfig is the quotas key of the node config.
type QuotasConfig struct {
	// Default applies to every namespace, field by field, unless Namespaces says otherwise.
	Default Quota `json:"default,omitzero"`
	// Namespaces override Default for the namespaces they name, field by field.
	Namespaces map[string]Quota `json:"namespaces,omitempty"`
}

// quotaResource is one thing a quota limits.
type quotaResource struct {
	name     string // the Quota field's key
	field    func(*Quota) **int
	capacity int    // the engine's, the largest quota allowed
	what     string // the capacity, for messages
	// keys are what an armed container (its key and its plan's resources) takes of it.
	keys func(key string, r bpf.Resources) []string
}

var quotaResources = []quotaResource{
	{"containers", func(q *Quota) **int { return &q.Containers }, bpf.MaxRules, "armed faults (each armed container has at least one)",
		func(key string, _ bpf.Resources) []string { return []string{key} }},
	{"hooks", func(q *Quota) **int { return &q.Hooks }, bpf.MaxHooks, "distinct hooked functions",
		func(_ string, r bpf.Resources) []string { return r.Hooks }},
	{"chains", func(q *Quota) **int { return &q.Chains }, bpf.MaxChains, "distinct call chains",
		func(_ string, r bpf.Resources) []string { return r.Chains }},
	{"frames", func(q *Quota) **int { return &q.Frames }, bpf.MaxFrames, "distinct call-chain frames",
		func(_ string, r bpf.Resources) []string { return r.Frames }},
}

// defaultQuota is the built-in quotas.default: a 1/QuotaShare share of each capacity.
func defaultQuota() Quota {
	n := func(v int) *int { return &v }
	return Quota{
		Containers: n(bpf.MaxRules / QuotaShare / annotations.MaxFaults),
		Hooks:      n(bpf.MaxHooks / QuotaShare),
		Chains:     n(bpf.MaxChains / QuotaShare),
		Frames:     n(bpf.MaxFrames / QuotaShare),
	}
}

// String is "containers=256 hooks=16 chains=63 frames=8", leaving out unset fields.
func (q Quota) String() string {
	var parts []string
	for _, r := range quotaResources {
		if v := *r.field(&q); v != nil {
			parts = append(parts, fmt.Sprintf("%s=%d", r.name, *v))
		}
	}
	return strings.Join(parts, " ")
}

// mergeQuota returns base with the fields set in over replacing base's.
func mergeQuota(base, over Quota) Quota {
	out := base
	for _, r := range quotaResources {
		if v := *r.field(&over); v != nil {
			c := *v
			*r.field(&out) = &c
		}
	}
	return out
}

// mergeQuotas: default field by field; namespaces entry by entry, field by field.
func mergeQuotas(base, over QuotasConfig) QuotasConfig {
	out := QuotasConfig{Default: mergeQuota(base.Default, over.Default)}
	if base.Namespaces != nil || over.Namespaces != nil {
		out.Namespaces = maps.Clone(base.Namespaces)
		if out.Namespaces == nil {
			out.Namespaces = map[string]Quota{}
		}
		for ns, q := range over.Namespaces {
			out.Namespaces[ns] = mergeQuota(out.Namespaces[ns], q)
		}
	}
	return out
}

// validate checks every quota: 0 up to the engine's capacity. Errors name the key.
func (q QuotasConfig) validate() error {
	check := func(prefix string, quota Quota) error {
		for _, r := range quotaResources {
			v := *r.field(&quota)
			switch {
			case v == nil:
			case *v < 0:
				return fmt.Errorf("node config: %s.%s: %d is negative (0 allows none)", prefix, r.name, *v)
			case *v > r.capacity:
				return fmt.Errorf("node config: %s.%s: %d is above the engine's capacity of %d %s on the node; at most %d", prefix, r.name, *v, r.capacity, r.what, r.capacity)
			}
		}
		return nil
	}
	if err := check("quotas.default", q.Default); err != nil {
		return err
	}
	for _, ns := range slices.Sorted(maps.Keys(q.Namespaces)) {
		if strings.TrimSpace(ns) == "" {
			return fmt.Errorf("node config: quotas.namespaces: empty namespace name")
		}
		if ns == AllNamespaces {
			return fmt.Errorf("node config: quotas.namespaces: %q: use quotas.default for every namespace", ns)
		}
		if err := check("quotas.namespaces."+ns, q.Namespaces[ns]); err != nil {
			return err
		}
	}
	return nil
}

// limit is ns's quota of r and the config key it comes from.
func (q QuotasConfig) limit(ns string, r quotaResource) (int, string) {
	nq := q.Namespaces[ns]
	if v := *r.field(&nq); v != nil {
		return *v, "quotas.namespaces." + ns + "." + r.name
	}
	if v := *r.field(&q.Default); v != nil {
		return *v, "quotas.default." + r.name
	}
	d := defaultQuota()
	return **r.field(&d), "quotas.default." + r.name
}

// QuotaError is a container refused because its namespace would go over a quota.
type QuotaError struct {
	Namespace string
	Resource  string // containers, hooks, chains or frames
	Quota     int
	Key       string // the config key the quota comes from
	InUse     int    // by the namespace's armed containers (the refused one's key excluded)
	Needs     int    // more than InUse, for this container
}

func (e *QuotaError) Error() string {
	what := e.Resource
	if e.Quota == 1 {
		what = strings.TrimSuffix(what, "s") // every resource name is a plural in -s
	}
	verb := "is at"
	if e.InUse < e.Quota {
		verb = "would exceed"
	}
	return fmt.Sprintf("namespace %q %s its quota of %d %s (%s; in use: %d, this container needs %d more): raise quotas.namespaces.%s.%s in the node config",
		e.Namespace, verb, e.Quota, what, e.Key, e.InUse, e.Needs, e.Namespace, e.Resource)
}

// usedLocked returns, per quotaResource, the keys that namespace ns's armed containers take,
// leaving out container except (the one being admitted: a rearm does not count twice).
// p.mu must be held.
func (p *Plugin) usedLocked(ns, except string) []map[string]bool {
	used := make([]map[string]bool, len(quotaResources))
	for i := range used {
		used[i] = map[string]bool{}
	}
	for key, a := range p.armed {
		if key == except || a.namespace != ns {
			continue
		}
		for i, r := range quotaResources {
			for _, k := range r.keys(key, a.res) {
				used[i][k] = true
			}
		}
	}
	return used
}

// checkQuotaLocked returns a *QuotaError when arming res for container key would take
// namespace ns over one of its quotas (the first, in the order containers, hooks, chains,
// frames). What the namespace already uses costs nothing more. p.mu must be held.
func (p *Plugin) checkQuotaLocked(ns, key string, res bpf.Resources) error {
	quotas := p.Config().Quotas
	used := p.usedLocked(ns, key)
	for i, r := range quotaResources {
		need := 0
		for _, k := range r.keys(key, res) {
			if !used[i][k] {
				need++
			}
		}
		limit, cfgKey := quotas.limit(ns, r)
		if need > 0 && len(used[i])+need > limit {
			return &QuotaError{Namespace: ns, Resource: r.name, Quota: limit, Key: cfgKey, InUse: len(used[i]), Needs: need}
		}
	}
	return nil
}

// checkQuota is checkQuotaLocked taking the lock.
func (p *Plugin) checkQuota(ns, key string, res bpf.Resources) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.checkQuotaLocked(ns, key, res)
}

// NamespaceQuota is one namespace's use of the engine against its quotas, for kfault status.
type NamespaceQuota struct {
	Namespace string          `json:"namespace"`
	Resources []ResourceQuota `json:"resources"` // containers, hooks, chains, frames
}

// ResourceQuota is the use of one quota.
type ResourceQuota struct {
	Resource string `json:"resource"`
	Used     int    `json:"used"`
	Quota    int    `json:"quota"`
	Key      string `json:"key"` // the config key the quota comes from
}

// quotaStatus reports every namespace with armed containers or a quotas.namespaces entry,
// sorted.
func (p *Plugin) quotaStatus() []NamespaceQuota {
	quotas := p.Config().Quotas
	p.mu.Lock()
	defer p.mu.Unlock()
	names := map[string]bool{}
	for ns := range quotas.Namespaces {
		names[ns] = true
	}
	for _, a := range p.armed {
		names[a.namespace] = true
	}
	out := []NamespaceQuota{}
	for _, ns := range slices.Sorted(maps.Keys(names)) {
		used := p.usedLocked(ns, "")
		nq := NamespaceQuota{Namespace: ns}
		for i, r := range quotaResources {
			limit, key := quotas.limit(ns, r)
			nq.Resources = append(nq.Resources, ResourceQuota{Resource: r.name, Used: len(used[i]), Quota: limit, Key: key})
		}
		out = append(out, nq)
	}
	return out
}
