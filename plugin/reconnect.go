package plugin

import (
	"context"
	"errors"
	"time"
)

// retry is how a connection to the runtime is retried: a delay from min doubling to max, back
// to min after a connection that lasted longer than stable.
type retry struct {
	min, max, stable time.Duration
}

// errFinal wraps an error after which the connection is not retried.
type errFinal struct{ err error }

func (e errFinal) Error() string { return e.err.Error() }
func (e errFinal) Unwrap() error { return e.err }

// reconnect runs serve until ctx ends, retrying with backoff whenever it returns. lost is the
// warning logged at each loss, with attrs. It returns nil when ctx ends, or the error of a
// serve that returned errFinal.
func (p *Plugin) reconnect(ctx context.Context, r retry, lost string, attrs []any, serve func() error) error {
	delay := r.min
	for {
		began := time.Now()
		err := serve()
		if ctx.Err() != nil {
			return nil
		}
		var final errFinal
		if errors.As(err, &final) {
			return final.err
		}
		if time.Since(began) > r.stable {
			delay = r.min
		}
		p.log.Warn(lost, append(attrs, "error", errString(err), "retryIn", delay.String())...)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, r.max)
	}
}
