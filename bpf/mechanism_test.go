package bpf

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

func TestChooseMechanism(t *testing.T) {
	// As the probes answer: one error wraps ErrMechanismUnavailable already (not wrapped twice),
	// the other does not (wrapped once).
	errFmod := fmt.Errorf("%w: fmod_ret: no trampolines", ErrMechanismUnavailable)
	errKprobe := errors.New("kprobe: no override")
	errLSM := errors.New("security_file_open: no trampolines")
	for name, tc := range map[string]struct {
		want                   Mechanism
		fmodErr, kpErr, lsmErr error
		mech                   Mechanism
		lsmOnly                bool
		err                    string   // "" when mech is chosen
		probed                 []string // the probes run, in order
	}{
		"auto, both work":      {want: MechanismAuto, mech: MechanismFmodRet, probed: []string{"fmod_ret"}},
		"auto, fmod_ret fails": {want: MechanismAuto, fmodErr: errFmod, mech: MechanismKprobe, probed: []string{"fmod_ret", "kprobe"}},
		"auto, kprobe fails":   {want: MechanismAuto, kpErr: errKprobe, mech: MechanismFmodRet, probed: []string{"fmod_ret"}},
		// A kernel without error injection (Debian's): fmod_ret on LSM hooks only.
		"auto, LSM hooks only": {want: MechanismAuto, fmodErr: errFmod, kpErr: errKprobe, mech: MechanismFmodRet, lsmOnly: true, probed: []string{"fmod_ret", "kprobe", "lsm"}},
		"auto, all fail": {want: MechanismAuto, fmodErr: errFmod, kpErr: errKprobe, lsmErr: errLSM,
			err:    "override mechanism unavailable (fmod_ret: override mechanism unavailable: fmod_ret: no trampolines) (kprobe: kprobe: no override) (fmod_ret on LSM hooks: security_file_open: no trampolines)",
			probed: []string{"fmod_ret", "kprobe", "lsm"}},
		"fmod_ret, works":          {want: MechanismFmodRet, kpErr: errKprobe, mech: MechanismFmodRet, probed: []string{"fmod_ret"}},
		"fmod_ret, LSM hooks only": {want: MechanismFmodRet, fmodErr: errFmod, mech: MechanismFmodRet, lsmOnly: true, probed: []string{"fmod_ret", "lsm"}},
		"fmod_ret, fails":          {want: MechanismFmodRet, fmodErr: errFmod, lsmErr: errLSM, err: "override mechanism unavailable: fmod_ret: no trampolines", probed: []string{"fmod_ret", "lsm"}},
		"kprobe, works":            {want: MechanismKprobe, fmodErr: errFmod, mech: MechanismKprobe, probed: []string{"kprobe"}},
		"kprobe, fails":            {want: MechanismKprobe, kpErr: errKprobe, err: "override mechanism unavailable: kprobe: kprobe: no override", probed: []string{"kprobe"}},
		"kprobe, LSM is no kprobe": {want: MechanismKprobe, fmodErr: errFmod, kpErr: errKprobe, err: "override mechanism unavailable: kprobe: kprobe: no override", probed: []string{"kprobe"}},
		"unknown mechanism":        {want: Mechanism(7), err: "override mechanism unavailable: unknown mechanism 7"},
	} {
		t.Run(name, func(t *testing.T) {
			var probed []string
			mech, lsmOnly, err := chooseMechanism(tc.want, probes{
				fmodRet:        func() error { probed = append(probed, "fmod_ret"); return tc.fmodErr },
				fmodRetLSM:     func() error { probed = append(probed, "lsm"); return tc.lsmErr },
				kprobeOverride: func() error { probed = append(probed, "kprobe"); return tc.kpErr },
			})
			switch {
			case tc.err == "" && (err != nil || mech != tc.mech || lsmOnly != tc.lsmOnly):
				t.Errorf("got %v, LSM only %v, %v; want %v, LSM only %v", mech, lsmOnly, err, tc.mech, tc.lsmOnly)
			case tc.err != "" && (err == nil || err.Error() != tc.err || !errors.Is(err, ErrMechanismUnavailable)):
				t.Errorf("got %v, %v; want the error %q wrapping ErrMechanismUnavailable", mech, err, tc.err)
			}
			if !slices.Equal(probed, tc.probed) {
				t.Errorf("probed %v, want %v", probed, tc.probed)
			}
		})
	}
}

// A memo keeps nil and errors that say what the kernel lacks, and probes again after any other
// error.
func TestMemo(t *testing.T) {
	for name, tc := range map[string]struct {
		err   error
		calls int // after three gets
	}{
		"works":               {nil, 1},
		"mechanism":           {fmt.Errorf("x: %w", ErrMechanismUnavailable), 1},
		"not injectable":      {fmt.Errorf("x: %w", ErrNotInjectable), 1},
		"no BTF":              {fmt.Errorf("x: %w", ErrNoBTF), 1},
		"probe itself failed": {errors.New("EAGAIN"), 3},
	} {
		t.Run(name, func(t *testing.T) {
			calls := 0
			m := &memo{probe: func() error { calls++; return tc.err }}
			for range 3 {
				if err := m.get(); err != tc.err {
					t.Fatalf("get = %v, want %v", err, tc.err)
				}
			}
			if calls != tc.calls {
				t.Errorf("%d probes, want %d", calls, tc.calls)
			}
		})
	}
}
