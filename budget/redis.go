package budget

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The scripts: common.lua is the Go code of gate.go in Lua, and each of the
// others is one operation, run atomically on the server.
var (
	//go:embed lua/common.lua
	luaCommon string
	//go:embed lua/reserve.lua
	luaReserve string
	//go:embed lua/settle.lua
	luaSettle string
	//go:embed lua/sync.lua
	luaSync string
	//go:embed lua/cas.lua
	luaCAS string
)

// LedgerKeep is how long a RedisStore's ledger keeps an entry.
const LedgerKeep = 400 * 24 * time.Hour

// ledgerSkew is how much earlier than asked Report starts reading the
// stream: its IDs are the server's clock, an entry's time the host's.
const ledgerSkew = 24 * time.Hour

// RedisStore is a Store in Redis, shared by every gptbatch on every host
// that names the same Redis and budget name. Every key of one budget is
// under one hash tag, {gptbatch:NAME}, so that it works on Redis Cluster:
// the state is the hash {gptbatch:NAME}:state and the ledger the stream
// {gptbatch:NAME}:ledger, one entry per call, kept LedgerKeep.
//
// A Gate over a RedisStore decides each Reserve, Settle and Sync in one Lua
// script on the server, on the server's clock (TIME), all-or-nothing, with
// the same buckets as over a FileStore; the time the Gate is given only
// picks the zone of a day that starts. A RedisStore never falls back to a
// local budget: every failure is an error naming the store. Safe for
// concurrent use.
type RedisStore struct {
	c             *redis.Client
	where         string // the URL, password redacted, for errors
	state, ledger string // the keys
	reserveScript *redis.Script
	settleScript  *redis.Script
	syncScript    *redis.Script
	casScript     *redis.Script
}

// OpenRedis connects to the Redis at rawURL
// (redis://[[user]:password@]host[:port][/db] or rediss:// for TLS) and
// pings it; name picks the budget ("" is "default"). An error names the
// store without its password.
func OpenRedis(ctx context.Context, rawURL, name string) (*RedisStore, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Error quotes the whole URL, password and all.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("store: not a redis:// URL: %w", err)
	}
	where := u.Redacted()
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, fmt.Errorf("store %s: want a redis:// or rediss:// URL", where)
	}
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", where, err)
	}
	// A script whose reply was lost may have run: running it again would
	// charge a reservation or append a ledger entry twice.
	opt.MaxRetries = -1
	if name == "" {
		name = "default"
	}
	tag := "{gptbatch:" + name + "}"
	r := &RedisStore{
		c:             redis.NewClient(opt),
		where:         where,
		state:         tag + ":state",
		ledger:        tag + ":ledger",
		reserveScript: redis.NewScript(luaCommon + luaReserve),
		settleScript:  redis.NewScript(luaCommon + luaSettle),
		syncScript:    redis.NewScript(luaCommon + luaSync),
		casScript:     redis.NewScript(luaCAS),
	}
	if err := r.c.Ping(ctx).Err(); err != nil {
		r.c.Close()
		return nil, r.fail(err)
	}
	return r, nil
}

// String is the store's URL with any password redacted.
func (r *RedisStore) String() string { return r.where }

// Close closes the connections.
func (r *RedisStore) Close() error { return r.c.Close() }

func (r *RedisStore) fail(err error) error {
	return fmt.Errorf("store %s: %w", r.where, err)
}

// serverGate is a Store that runs the Gate's operations itself, each as
// one atomic step on its own clock (RedisStore). The Gate hands them over
// instead of running its Go code through Update; now is the host's time,
// used only for the zone of a day that starts.
type serverGate interface {
	reserve(ctx context.Context, now time.Time, l Limits, slack time.Duration, ests []Estimate) (int, time.Duration, Reason, error)
	settle(ctx context.Context, now time.Time, l Limits, ss []Settlement) error
	sync(ctx context.Context, now, until time.Time, l Limits, used ServerUsage) error
}

// dayOffset is the UTC offset of now's zone at the next midnight: the end
// of the day, should now start one.
func dayOffset(now time.Time) int {
	y, m, d := now.Date()
	_, off := time.Date(y, m, d+1, 0, 0, 0, 0, now.Location()).Zone()
	return off
}

func pico(c Cost) int64 { return int64(max(c, 0)) }

// nanos reads a duration in ns that the server wrote as a decimal double.
func nanos(s string) (time.Duration, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || f < 0 {
		return 0, fmt.Errorf("script returned the wait %q", s)
	}
	if f >= math.MaxInt64 {
		return time.Duration(math.MaxInt64), nil
	}
	return time.Duration(f), nil
}

func (r *RedisStore) reserve(ctx context.Context, now time.Time, l Limits, slack time.Duration, ests []Estimate) (int, time.Duration, Reason, error) {
	args := make([]any, 0, 6+2*len(ests))
	args = append(args, l.RPM, l.TPM, l.TPD, pico(l.DailyCost), int64(slack), dayOffset(now))
	for _, e := range ests {
		args = append(args, e.Tokens, pico(e.Cost))
	}
	res, err := r.reserveScript.Run(ctx, r.c, []string{r.state}, args...).Slice()
	if err != nil {
		return 0, 0, "", r.fail(err)
	}
	if len(res) != 3 {
		return 0, 0, "", r.fail(fmt.Errorf("reserve script returned %v", res))
	}
	n, ok1 := res[0].(int64)
	ws, ok2 := res[1].(string)
	why, ok3 := res[2].(string)
	if !ok1 || !ok2 || !ok3 {
		return 0, 0, "", r.fail(fmt.Errorf("reserve script returned %v", res))
	}
	wait, err := nanos(ws)
	if err != nil {
		return 0, 0, "", r.fail(err)
	}
	return int(n), wait, Reason(why), nil
}

func (r *RedisStore) settle(ctx context.Context, now time.Time, l Limits, ss []Settlement) error {
	args := make([]any, 0, 5+6*len(ss))
	args = append(args, l.RPM, l.TPM, dayOffset(now), LedgerKeep.Milliseconds(), len(ss))
	for _, s := range ss {
		sent := 0
		if s.Sent {
			sent = 1
		}
		args = append(args, s.Est.Tokens, pico(s.Est.Cost), sent, s.Tokens, pico(s.Cost))
	}
	for _, s := range ss {
		if s.Entry != nil {
			b, err := json.Marshal(s.Entry)
			if err != nil {
				return fmt.Errorf("ledger entry: %w", err)
			}
			args = append(args, b)
		}
	}
	if err := r.settleScript.Run(ctx, r.c, []string{r.state, r.ledger}, args...).Err(); err != nil {
		return r.fail(err)
	}
	return nil
}

func (r *RedisStore) sync(ctx context.Context, now, until time.Time, l Limits, used ServerUsage) error {
	// The pause is a duration from the host's now, so that the server's
	// clock ends it: a skewed host neither stretches nor cuts it.
	pause := max(0, (until.Sub(now)+time.Microsecond-1)/time.Microsecond)
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	err := r.syncScript.Run(ctx, r.c, []string{r.state},
		l.RPM, l.TPM, dayOffset(now), int64(pause), f(used.Requests), f(used.Tokens)).Err()
	if err != nil {
		return r.fail(err)
	}
	return nil
}

// Load reads the state, without writing. Its times are the server's.
func (r *RedisStore) Load(ctx context.Context) (State, error) {
	s, _, err := r.load(ctx)
	return s, err
}

// The fields of the state hash; those of State's unknown keys start with
// extraPrefix.
const extraPrefix = "x."

// hashState is what load read besides the State: the fields Update keeps.
type hashState struct {
	ver             string
	dayEnds, dayOff int64
}

func (r *RedisStore) load(ctx context.Context) (State, hashState, error) {
	h, err := r.c.HGetAll(ctx, r.state).Result()
	if err != nil {
		return State{}, hashState{}, r.fail(err)
	}
	s, hs, err := parseHash(h)
	if err != nil {
		return State{}, hashState{}, r.fail(fmt.Errorf("%s is corrupt; gptbatch will not reset it: %w", r.state, err))
	}
	return s, hs, nil
}

func parseHash(h map[string]string) (State, hashState, error) {
	var s State
	hs := hashState{ver: h["ver"]}
	var err error
	for _, f := range []struct {
		key string
		set func(string) error
	}{
		{"tmin", func(v string) (err error) { s.TokensWithinMin, err = parseLevel(v); return }},
		{"rmin", func(v string) (err error) { s.RequestsWithinMin, err = parseLevel(v); return }},
		{"tday", func(v string) (err error) { s.TokensWithinDay, err = parseCount(v); return }},
		{"cday", func(v string) error { c, err := parseCount(v); s.CostWithinDay = Cost(c); return err }},
		{"mreach", func(v string) (err error) { s.MinuteTokenLimitReached, err = parseFlag(v); return }},
		{"dreach", func(v string) (err error) { s.DayTokenLimitReached, err = parseFlag(v); return }},
		{"updated", func(v string) (err error) { s.Updated, err = parseMicros(v); return }},
		{"paused", func(v string) (err error) { s.PausedUntil, err = parseMicros(v); return }},
		{"day_ends", func(v string) (err error) { hs.dayEnds, err = strconv.ParseInt(v, 10, 64); return }},
		{"day_off", func(v string) (err error) { hs.dayOff, err = strconv.ParseInt(v, 10, 64); return }},
	} {
		v, ok := h[f.key]
		if !ok {
			continue
		}
		if err = f.set(v); err != nil {
			return State{}, hashState{}, fmt.Errorf("field %s: %w", f.key, err)
		}
	}
	if hs.dayEnds > 0 {
		s.Date = time.UnixMicro(hs.dayEnds - 1).In(time.FixedZone("", int(hs.dayOff))).Format(time.DateOnly)
	}
	for k, v := range h {
		if name, ok := strings.CutPrefix(k, extraPrefix); ok {
			s.extra = append(s.extra, [2]string{name, v})
		}
	}
	sort.Slice(s.extra, func(i, j int) bool { return s.extra[i][0] < s.extra[j][0] })
	return s, hs, nil
}

func parseMicros(v string) (time.Time, error) {
	us, err := strconv.ParseInt(v, 10, 64)
	if err != nil || us < 0 {
		return time.Time{}, fmt.Errorf("not a time in µs")
	}
	if us == 0 {
		return time.Time{}, nil
	}
	return time.UnixMicro(us), nil
}

func micros(t time.Time) string {
	if t.IsZero() {
		return "0"
	}
	return strconv.FormatInt(t.UnixMicro(), 10)
}

// Update implements Store as an optimistic transaction: it reads the
// state, calls fn, and writes what fn left, with fn's ledger entries, only
// if nobody wrote in between; else it reads again and calls fn again. The
// Gate does not use it (its operations run as scripts, on the server's
// clock); it serves other changes to the state. A new Date sets the day to
// end at that date's next midnight in the zone of the day it replaces.
func (r *RedisStore) Update(ctx context.Context, fn func(*State) ([]LedgerEntry, error)) error {
	for {
		old, hs, err := r.load(ctx)
		if err != nil {
			return err
		}
		s := old
		s.extra = append([][2]string(nil), old.extra...)
		entries, err := fn(&s)
		if err != nil {
			return err
		}
		dayEnds := hs.dayEnds
		if s.Date != old.Date {
			dayEnds = 0
			zone := time.FixedZone("", int(hs.dayOff))
			if d, err := time.ParseInLocation(time.DateOnly, s.Date, zone); err == nil {
				dayEnds = d.AddDate(0, 0, 1).UnixMicro()
			}
		}
		pairs := []any{
			"tmin", formatFloat(s.TokensWithinMin), "rmin", formatFloat(s.RequestsWithinMin),
			"tday", max(s.TokensWithinDay, 0), "cday", pico(s.CostWithinDay),
			"mreach", formatFlag(s.MinuteTokenLimitReached), "dreach", formatFlag(s.DayTokenLimitReached),
			"updated", micros(s.Updated), "paused", micros(s.PausedUntil),
			"day_ends", dayEnds, "day_off", hs.dayOff,
		}
		kept := map[string]bool{}
		for _, e := range s.extra {
			pairs = append(pairs, extraPrefix+e[0], e[1])
			kept[e[0]] = true
		}
		args := append([]any{hs.ver, LedgerKeep.Milliseconds(), len(pairs) / 2}, pairs...)
		var gone []any
		for _, e := range old.extra {
			if !kept[e[0]] {
				gone = append(gone, extraPrefix+e[0])
			}
		}
		args = append(append(args, len(gone)), gone...)
		for _, e := range entries {
			b, err := json.Marshal(e)
			if err != nil {
				return fmt.Errorf("ledger entry: %w", err)
			}
			args = append(args, b)
		}
		ok, err := r.casScript.Run(ctx, r.c, []string{r.state, r.ledger}, args...).Int()
		if err != nil {
			return r.fail(err)
		}
		if ok == 1 {
			return nil
		}
	}
}

func formatFloat(f float64) string {
	if !(f > 0) {
		f = 0
	}
	return strconv.FormatFloat(min(f, maxLevel), 'g', -1, 64)
}

// Ledger calls fn for each ledger entry the server stamped at or after
// from (every entry when from is zero), oldest first, and stops at the
// first error fn returns. An entry's stamp is the server's clock, its Time
// the host's.
func (r *RedisStore) Ledger(ctx context.Context, from time.Time, fn func(LedgerEntry) error) error {
	start := "-"
	if !from.IsZero() {
		start = strconv.FormatInt(max(from.UnixMilli(), 0), 10)
	}
	const page = 1000
	for {
		msgs, err := r.c.XRangeN(ctx, r.ledger, start, "+", page).Result()
		if err != nil {
			return r.fail(err)
		}
		for _, m := range msgs {
			v, _ := m.Values["e"].(string)
			var e LedgerEntry
			if err := json.Unmarshal([]byte(v), &e); err != nil {
				return r.fail(fmt.Errorf("%s entry %s: not a ledger entry: %w", r.ledger, m.ID, err))
			}
			if err := fn(e); err != nil {
				return err
			}
		}
		if len(msgs) < page {
			return nil
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
}

// Report is BuildReport of the ledger: every host's calls.
func (r *RedisStore) Report(ctx context.Context, opt ReportOptions, loc *time.Location) (Report, error) {
	var from time.Time
	if !opt.Since.IsZero() {
		from = opt.Since.Add(-ledgerSkew)
	}
	b := newReportBuilder(opt, loc)
	if err := r.Ledger(ctx, from, b.add); err != nil {
		return Report{}, err
	}
	return b.report(), nil
}
