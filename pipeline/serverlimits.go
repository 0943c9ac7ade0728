package pipeline

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/retry"
)

// observe reads a response's x-ratelimit-* headers. A server limit lower
// than the configured one replaces it, said once on stderr. A limit the
// server says is used up pauses every worker for the time one more request
// needs to refill (the reset header is the time to refill all of it, which
// would be far too long for a bucket), or until the reset if sooner.
func (r *runner) observe(ctx context.Context, h http.Header) {
	if h == nil {
		return
	}
	r.limitsMu.Lock()
	defer r.limitsMu.Unlock()
	lim := r.cfg.Gate.Limits()
	changed := false
	for _, k := range []struct {
		kind, flag string
		cur        *int64
	}{{"requests", "--rpm", &lim.RPM}, {"tokens", "--tpm", &lim.TPM}} {
		n, err := strconv.ParseInt(h.Get("x-ratelimit-limit-"+k.kind), 10, 64)
		if err != nil || n <= 0 || (*k.cur > 0 && n >= *k.cur) {
			continue
		}
		r.cfg.Log.Warn("the server allows fewer "+k.kind+" per minute than "+k.flag+": using its limit", "server", n, "configured", *k.cur)
		*k.cur = n
		changed = true
	}
	if changed {
		r.cfg.Gate.SetLimits(lim)
	}
	var pause time.Duration
	if h.Get("x-ratelimit-remaining-requests") == "0" && lim.RPM > 0 {
		if d, err := time.ParseDuration(h.Get("x-ratelimit-reset-requests")); err == nil {
			pause = min(d, time.Minute/time.Duration(lim.RPM))
		}
	}
	if pause > 0 {
		now := r.cfg.Clock.Now()
		// Only a pause: at the limit's own pace the server is at zero after
		// nearly every request, and the gate's bucket already agrees.
		if err := r.cfg.Gate.Pause(ctx, now, now.Add(pause)); err == nil {
			r.cfg.Log.Debug("server limit used up", "pause", pause)
		}
	}
}

// refused tells the gate of a 429 after which every process sharing the
// budget pauses for pause, and when the gate finds the server stricter
// than its minute limit it paces that limit per second, which is said
// once.
func (r *runner) refused(ctx context.Context, f retry.Failure, h http.Header, pause time.Duration) error {
	now := r.cfg.Clock.Now()
	newly, err := r.cfg.Gate.Refused(ctx, now, budget.Refusal{Limit: f.Limit, Used: serverUsage(h), Until: now.Add(pause)})
	if err != nil || newly == "" {
		return err
	}
	lim := r.cfg.Gate.Limits()
	kind, perMin, said := "request", lim.RPM, &r.pacingSaid[0]
	if newly == budget.PacedTokens {
		kind, perMin, said = "token", lim.TPM, &r.pacingSaid[1]
	}
	if said.CompareAndSwap(false, true) {
		r.cfg.Log.Warn(fmt.Sprintf("the server enforces its %s limit per second: pacing at %s a second", kind, paceFigure(budget.PaceRate(perMin))))
	}
	return nil
}

// paceFigure writes a rate with one decimal below 100 a second.
func paceFigure(rate float64) string {
	if rate < 100 {
		return strconv.FormatFloat(rate, 'f', 1, 64)
	}
	return strconv.FormatFloat(rate, 'f', 0, 64)
}

// serverUsage is what the headers say is used of the server's limits.
func serverUsage(h http.Header) budget.ServerUsage {
	used := func(kind string) float64 {
		l, err1 := strconv.ParseFloat(h.Get("x-ratelimit-limit-"+kind), 64)
		r, err2 := strconv.ParseFloat(h.Get("x-ratelimit-remaining-"+kind), 64)
		if err1 != nil || err2 != nil {
			return -1
		}
		return l - r
	}
	return budget.ServerUsage{Requests: used("requests"), Tokens: used("tokens")}
}
