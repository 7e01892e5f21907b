package annotations

import (
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// MaxErrno is the largest errno the kernel returns as an error pointer or value
// (include/linux/err.h MAX_ERRNO).
const MaxErrno = 4095

// kernelOnlyErrnos are errno values from include/linux/errno.h that the kernel uses
// internally and golang.org/x/sys/unix does not define (they are not part of the
// userspace ABI). Functions on the error-injection list may return them.
var kernelOnlyErrnos = map[string]int{
	"ERESTARTSYS":           512,
	"ERESTARTNOINTR":        513,
	"ERESTARTNOHAND":        514,
	"ENOIOCTLCMD":           515,
	"ERESTART_RESTARTBLOCK": 516,
	"EPROBE_DEFER":          517,
	"EOPENSTALE":            518,
	"ENOPARAM":              519,
	"EBADHANDLE":            521,
	"ENOTSYNC":              522,
	"EBADCOOKIE":            523,
	"ENOTSUPP":              524,
	"ETOOSMALL":             525,
	"ESERVERFAULT":          526,
	"EBADTYPE":              527,
	"EJUKEBOX":              528,
	"EIOCBQUEUED":           529,
	"ERECALLCONFLICT":       530,
	"ENOGRACE":              531,
}

// errnoAliases are second names for a number; unix.ErrnoName returns only one name
// per number, so the aliases come from the unix constants themselves.
var errnoAliases = map[string]syscall.Errno{
	"EWOULDBLOCK":  unix.EWOULDBLOCK,
	"EDEADLOCK":    unix.EDEADLOCK,
	"ENOTSUP":      unix.ENOTSUP,
	"EOPNOTSUPP":   unix.EOPNOTSUPP,
	"EFSBADCRC":    unix.EFSBADCRC,
	"EFSCORRUPTED": unix.EFSCORRUPTED,
}

var (
	errnoByName   map[string]int // upper-case name → number
	errnoByNumber map[int]string // number → canonical name
)

func init() {
	errnoByName = map[string]int{}
	errnoByNumber = map[int]string{}
	for n := 1; n <= MaxErrno; n++ {
		if name := unix.ErrnoName(syscall.Errno(n)); name != "" {
			errnoByName[name] = n
			errnoByNumber[n] = name
		}
	}
	for name, e := range errnoAliases {
		errnoByName[name] = int(e)
	}
	for name, n := range kernelOnlyErrnos {
		errnoByName[name] = n
		if _, taken := errnoByNumber[n]; !taken {
			errnoByNumber[n] = name
		}
	}
}

// LookupErrno returns the number of a Linux errno name such as "EACCES". Names are
// matched case-insensitively; the numbers are those of the build architecture
// (golang.org/x/sys/unix), plus the kernel-internal codes 512-531.
func LookupErrno(name string) (int, bool) {
	n, ok := errnoByName[strings.ToUpper(name)]
	return n, ok
}

// ErrnoName returns the canonical name of errno number n, or "" if it has none.
func ErrnoName(n int) string {
	return errnoByNumber[n]
}

// ErrnoNames returns every accepted errno name, sorted.
func ErrnoNames() []string {
	names := make([]string, 0, len(errnoByName))
	for name := range errnoByName {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// formatErrno renders n as "EACCES" or, without a name, as the number.
func formatErrno(n int) string {
	if name := ErrnoName(n); name != "" {
		return name
	}
	return strconv.Itoa(n)
}
