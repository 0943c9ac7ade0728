package budget

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"reflect"
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
// A Gate over a RedisStore decides each Reserve, ReserveDay, Settle, Sync
// and Refused in one Lua script on the server, on the server's clock
// (TIME), all-or-nothing, with the same buckets, day boundary, per-second
// pacing and stored limits as over a FileStore; the time the Gate is given
// only picks the day a day that starts is, in the gate's zone. Update (the
// stored limits, Gate.Load) is a compare-and-swap. A RedisStore never falls back to a
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
	redis.SetLogger(quietRedis{})
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
		return nil, fmt.Errorf("the shared budget store is unreachable: %w", r.fail(err))
	}
	return r, nil
}

// quietRedis keeps go-redis from logging: every failure it meets reaches
// the caller as an error, which names the store.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// String is the store's URL with any password redacted.
func (r *RedisStore) String() string { return r.where }

// Close closes the connections.
func (r *RedisStore) Close() error { return r.c.Close() }

func (r *RedisStore) fail(err error) error {
	return fmt.Errorf("store %s: %w", r.where, err)
}

// serverGate is a Store that runs the Gate's operations itself, each as
// one atomic step on its own clock (RedisStore). The Gate hands them over
// instead of running its Go code through Update, with its own limits (the
// store applies the stored ceilings), and records the Seen they return;
// now is the host's time, used only for the day a day that starts is in
// zone (nil: now's).
type serverGate interface {
	reserve(ctx context.Context, now time.Time, zone *time.Location, own Limits, slack time.Duration, ests []Estimate, dayOnly bool) (int, time.Duration, Reason, Seen, error)
	settle(ctx context.Context, now time.Time, zone *time.Location, own Limits, ss []Settlement) (Seen, error)
	sync(ctx context.Context, now time.Time, zone *time.Location, own Limits, r Refusal, refused bool) (Reason, Seen, error)
}

// dayOffset is the UTC offset of now's zone at the next midnight: the end
// of the day, should now start one.
func dayOffset(now time.Time) int {
	y, m, d := now.Date()
	_, off := time.Date(y, m, d+1, 0, 0, 0, 0, now.Location()).Zone()
	return off
}

// dayDays is how many days either side of the host's date a script is
// told the ends and dates of: a host clock this far off the server's still
// starts days exactly as advanceDay would.
const dayDays = 3

// dayArgs are the arguments that start every script (see common.lua): the
// gate's own limits and the days around the host's now in zone (nil:
// now's), so that the script finds the day the server's now is in as
// advanceDay does, daylight saving and all.
func dayArgs(now time.Time, zone *time.Location, own Limits) []any {
	if zone == nil {
		zone = now.Location()
	}
	now = now.In(zone)
	y, m, d := now.Date()
	end := func(k int) int64 { return time.Date(y, m, d+k+1, 0, 0, 0, 0, zone).UnixMicro() }
	args := make([]any, 0, 8+2*(2*dayDays+1))
	args = append(args, own.RPM, own.TPM, own.TPD, pico(own.DailyCost), dayOffset(now), 2*dayDays+1, end(-dayDays-1))
	for k := -dayDays; k <= dayDays; k++ {
		args = append(args, end(k), time.Date(y, m, d+k, 12, 0, 0, 0, zone).Format(time.DateOnly))
	}
	return args
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

// seenLen is how many values of a script's reply are the Seen.
const seenLen = 7

// parseSeen reads the Seen a script returned (seen in common.lua).
func parseSeen(v []any) (Seen, error) {
	if len(v) != seenLen {
		return Seen{}, fmt.Errorf("script returned %v", v)
	}
	var f [seenLen]string
	for i := range v {
		s, ok := v[i].(string)
		if !ok {
			return Seen{}, fmt.Errorf("script returned %v", v)
		}
		f[i] = s
	}
	var sn Seen
	var errs [6]error
	sn.Date = f[0]
	sn.TokensWithinDay, errs[0] = parseCount(f[1])
	var c, sc int64
	c, errs[1] = parseCount(f[2])
	sn.Stored.RPM, errs[2] = parseCount(f[3])
	sn.Stored.TPM, errs[3] = parseCount(f[4])
	sn.Stored.TPD, errs[4] = parseCount(f[5])
	sc, errs[5] = parseCount(f[6])
	sn.CostWithinDay, sn.Stored.DailyCost = Cost(c), Cost(sc)
	if err := errors.Join(errs[:]...); err != nil {
		return Seen{}, fmt.Errorf("script returned %v: %w", v, err)
	}
	return sn, nil
}

func (r *RedisStore) reserve(ctx context.Context, now time.Time, zone *time.Location, own Limits, slack time.Duration, ests []Estimate, dayOnly bool) (int, time.Duration, Reason, Seen, error) {
	mode := "minute"
	if dayOnly {
		mode = "day"
	}
	args := append(dayArgs(now, zone, own), int64(slack), mode)
	for _, e := range ests {
		args = append(args, e.Tokens, pico(e.Cost))
	}
	res, err := r.reserveScript.Run(ctx, r.c, []string{r.state}, args...).Slice()
	if err != nil {
		return 0, 0, "", Seen{}, r.fail(err)
	}
	bad := func(err error) (int, time.Duration, Reason, Seen, error) {
		if err == nil {
			err = fmt.Errorf("reserve script returned %v", res)
		}
		return 0, 0, "", Seen{}, r.fail(err)
	}
	if len(res) != 3+seenLen {
		return bad(nil)
	}
	n, ok1 := res[0].(int64)
	ws, ok2 := res[1].(string)
	why, ok3 := res[2].(string)
	if !ok1 || !ok2 || !ok3 {
		return bad(nil)
	}
	wait, err := nanos(ws)
	if err != nil {
		return bad(err)
	}
	sn, err := parseSeen(res[3:])
	if err != nil {
		return bad(err)
	}
	return int(n), wait, Reason(why), sn, nil
}

func (r *RedisStore) settle(ctx context.Context, now time.Time, zone *time.Location, own Limits, ss []Settlement) (Seen, error) {
	args := append(dayArgs(now, zone, own), LedgerKeep.Milliseconds(), len(ss))
	flag := func(b bool) int {
		if b {
			return 1
		}
		return 0
	}
	for _, s := range ss {
		args = append(args, s.Est.Tokens, pico(s.Est.Cost), flag(s.Sent), flag(s.DayOnly), s.Tokens, pico(s.Cost), s.Day)
	}
	for _, s := range ss {
		if s.Entry != nil {
			b, err := s.Entry.appendJSON(nil)
			if err != nil {
				return Seen{}, fmt.Errorf("ledger entry: %w", err)
			}
			args = append(args, b[:len(b)-1]) // a stream entry: no newline
		}
	}
	res, err := r.settleScript.Run(ctx, r.c, []string{r.state, r.ledger}, args...).Slice()
	if err != nil {
		return Seen{}, r.fail(err)
	}
	sn, err := parseSeen(res)
	if err != nil {
		return Seen{}, r.fail(err)
	}
	return sn, nil
}

// sync is Sync, or Refused when refused.
func (r *RedisStore) sync(ctx context.Context, now time.Time, zone *time.Location, own Limits, rf Refusal, refused bool) (Reason, Seen, error) {
	mode, lim := "sync", ""
	if refused {
		mode = "refused"
		switch rf.Limit {
		case MinuteRequests:
			lim = "r"
		case MinuteTokens:
			lim = "t"
		}
	}
	// The back-off is a duration from the host's now, so that the
	// server's clock ends it: a skewed host neither stretches nor cuts it.
	pause := ""
	if !rf.Until.IsZero() {
		d := rf.Until.Sub(now)
		us := d / time.Microsecond // rounds up below 0
		if d%time.Microsecond > 0 {
			us++
		}
		pause = strconv.FormatInt(int64(us), 10)
	}
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	args := append(dayArgs(now, zone, own), mode, lim, pause, f(rf.Used.Requests), f(rf.Used.Tokens))
	res, err := r.syncScript.Run(ctx, r.c, []string{r.state}, args...).Slice()
	if err != nil {
		return "", Seen{}, r.fail(err)
	}
	newly, ok := "", len(res) == 1+seenLen
	if ok {
		newly, ok = res[0].(string)
	}
	if !ok {
		return "", Seen{}, r.fail(fmt.Errorf("sync script returned %v", res))
	}
	sn, err := parseSeen(res[1:])
	if err != nil {
		return "", Seen{}, r.fail(err)
	}
	return Reason(newly), sn, nil
}

// Load reads the state, without writing. Its times are the server's.
func (r *RedisStore) Load(ctx context.Context) (State, error) {
	s, _, err := r.load(ctx)
	return s, err
}

// The fields of the state hash; those of State's unknown keys start with
// extraPrefix.
const extraPrefix = "x."

// hashState is what load read besides the State: the version Update
// compares.
type hashState struct {
	ver string
}

func (r *RedisStore) load(ctx context.Context) (State, hashState, error) {
	h, err := r.c.HGetAll(ctx, r.state).Result()
	if err != nil {
		return State{}, hashState{}, r.fail(err)
	}
	s, err := parseHash(h)
	if err != nil {
		return State{}, hashState{}, r.fail(fmt.Errorf("%s is corrupt; gptbatch will not reset it: %w", r.state, err))
	}
	return s, hashState{ver: h["ver"]}, nil
}

func parseHash(h map[string]string) (State, error) {
	var s State
	var dayOff int64
	cost := func(c *Cost) func(string) error {
		return func(v string) error { n, err := parseCount(v); *c = Cost(n); return err }
	}
	count := func(n *int64) func(string) error {
		return func(v string) (err error) { *n, err = parseCount(v); return }
	}
	ts := func(t *time.Time) func(string) error {
		return func(v string) (err error) { *t, err = parseMicros(v); return }
	}
	for _, f := range []struct {
		key string
		set func(string) error
	}{
		{"tmin", func(v string) (err error) { s.TokensWithinMin, err = parseLevel(v); return }},
		{"rmin", func(v string) (err error) { s.RequestsWithinMin, err = parseLevel(v); return }},
		{"tday", count(&s.TokensWithinDay)},
		{"cday", cost(&s.CostWithinDay)},
		{"mreach", func(v string) (err error) { s.MinuteTokenLimitReached, err = parseFlag(v); return }},
		{"dreach", func(v string) (err error) { s.DayTokenLimitReached, err = parseFlag(v); return }},
		{"updated", ts(&s.Updated)},
		{"paused", ts(&s.PausedUntil)},
		{"day_ends", ts(&s.DayEndsAt)},
		{"day_off", func(v string) (err error) { dayOff, err = strconv.ParseInt(v, 10, 64); return }},
		{"date", func(v string) error {
			if _, err := time.Parse(time.DateOnly, v); v != "" && err != nil {
				return fmt.Errorf("not a date (YYYY-MM-DD)")
			}
			s.Date = v
			return nil
		}},
		{"rpaced", ts(&s.RequestsPacedUntil)},
		{"rnext", func(v string) (err error) { s.RequestsNextAt, err = parseNanos(v); return }},
		{"tpaced", ts(&s.TokensPacedUntil)},
		{"tnext", func(v string) (err error) { s.TokensNextAt, err = parseNanos(v); return }},
		{"lrpm", count(&s.Stored.RPM)},
		{"ltpm", count(&s.Stored.TPM)},
		{"ltpd", count(&s.Stored.TPD)},
		{"lcost", cost(&s.Stored.DailyCost)},
	} {
		v, ok := h[f.key]
		if !ok {
			continue
		}
		if err := f.set(v); err != nil {
			return State{}, fmt.Errorf("field %s: %w", f.key, err)
		}
	}
	if _, ok := h["date"]; !ok && !s.DayEndsAt.IsZero() {
		// A hash of the first version: its day is the one day_ends ends,
		// at the offset day_off.
		s.Date = s.DayEndsAt.Add(-time.Microsecond).In(time.FixedZone("", int(dayOff))).Format(time.DateOnly)
	}
	for k, v := range h {
		if name, ok := strings.CutPrefix(k, extraPrefix); ok {
			s.extra = append(s.extra, [2]string{name, v})
		}
	}
	sort.Slice(s.extra, func(i, j int) bool { return s.extra[i][0] < s.extra[j][0] })
	return s, nil
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

func parseNanos(v string) (time.Time, error) {
	ns, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ns < 0 {
		return time.Time{}, fmt.Errorf("not a time in ns")
	}
	if ns == 0 {
		return time.Time{}, nil
	}
	return time.Unix(0, ns), nil
}

func micros(t time.Time) string {
	if t.IsZero() || t.Before(time.Unix(0, 0)) {
		return "0"
	}
	return strconv.FormatInt(t.UnixMicro(), 10)
}

func nanosOf(t time.Time) string {
	if t.IsZero() || t.Before(time.Unix(0, 0)) || t.Year() > 2200 { // UnixNano's range
		return "0"
	}
	return strconv.FormatInt(t.UnixNano(), 10)
}

// fields are the hash's fields and values for s, as the scripts keep them.
func fields(s State) []any {
	date := s.Date
	if _, err := time.Parse(time.DateOnly, date); err != nil {
		date = ""
	}
	return []any{
		"tmin", formatFloat(s.TokensWithinMin), "rmin", formatFloat(s.RequestsWithinMin),
		"tday", max(s.TokensWithinDay, 0), "cday", pico(s.CostWithinDay),
		"mreach", formatFlag(s.MinuteTokenLimitReached), "dreach", formatFlag(s.DayTokenLimitReached),
		"updated", micros(s.Updated), "paused", micros(s.PausedUntil),
		"day_ends", micros(s.DayEndsAt), "date", date,
		"rpaced", micros(s.RequestsPacedUntil), "rnext", nanosOf(s.RequestsNextAt),
		"tpaced", micros(s.TokensPacedUntil), "tnext", nanosOf(s.TokensNextAt),
		"lrpm", max(s.Stored.RPM, 0), "ltpm", max(s.Stored.TPM, 0), "ltpd", max(s.Stored.TPD, 0),
		"lcost", pico(s.Stored.DailyCost),
	}
}

// Update implements Store as an optimistic transaction: it reads the
// state, calls fn, and writes what fn left, with fn's ledger entries, only
// if nobody wrote in between; else it reads again and calls fn again. It
// writes nothing when fn changed nothing and returned no entries. The
// Gate's operations do not use it (they run as scripts, on the server's
// clock) except Load; it serves the stored limits (SetStoredLimits,
// ClearStoredLimits) and other changes to the state. Times are written to
// the µs (the pace's next slots to the ns).
func (r *RedisStore) Update(ctx context.Context, now time.Time, fn func(*State, time.Time) ([]LedgerEntry, error)) error {
	for {
		old, hs, err := r.load(ctx)
		if err != nil {
			return err
		}
		s := old
		s.extra = append([][2]string(nil), old.extra...)
		entries, err := fn(&s, now)
		if err != nil {
			return err
		}
		if len(entries) == 0 && reflect.DeepEqual(s, old) {
			return nil
		}
		pairs := fields(s)
		kept := map[string]bool{}
		for _, e := range s.extra {
			pairs = append(pairs, extraPrefix+e[0], e[1])
			kept[e[0]] = true
		}
		args := append([]any{hs.ver, LedgerKeep.Milliseconds(), len(pairs) / 2}, pairs...)
		// day_off was the first version's zone of the day; date says it now.
		gone := []any{"day_off"}
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

// BatchEntries implements Store: every host's entries.
func (r *RedisStore) BatchEntries(ctx context.Context, since time.Time, ids map[string]bool) (map[string]int, error) {
	c := newCounter(ids)
	var from time.Time
	if !since.IsZero() {
		from = since.Add(-ledgerSkew)
	}
	if err := r.Ledger(ctx, from, c.add); err != nil {
		return nil, err
	}
	return c.n, nil
}
