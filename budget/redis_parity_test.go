package budget

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/gptbatch/gptbatch/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// The parity tests run every operation of the Gate through the Go code
// (over a MemStore) and through the Lua scripts (over a RedisStore) at the
// same instants, and compare what each returns, what each gate has Seen
// and the whole state each leaves. The scripts read their clock from a key
// the test sets instead of TIME, so the same cases run on miniredis and on
// a real redis-server's own Lua.

// timeNow is common.lua's clock, and testNow the one the tests put in its
// place.
const (
	timeNow = "local function now_us()\n  local t = redis.call('TIME')\n  return tonumber(t[1]) * US + tonumber(t[2])\nend\n"
	testNow = "local function now_us()\n  return tonumber(redis.call('GET', KEYS[1] .. ':clock'))\nend\n"
)

// mutation changes the Lua: old becomes new in the scripts (common.lua
// and the operation's), once.
type mutation struct{ old, new string }

// clocked is a RedisStore on url for budget name whose scripts read the
// clock the test sets (setClock), with the mutation applied when one is
// given.
func clocked(t testing.TB, url, name string, mut *mutation) *RedisStore {
	t.Helper()
	r, err := OpenRedis(context.Background(), url, name)
	if err != nil {
		t.Fatalf("OpenRedis = %v", err)
	}
	t.Cleanup(func() { r.Close() })
	if !strings.Contains(luaCommon, timeNow) {
		t.Fatal("common.lua has no now_us as the tests know it: update timeNow")
	}
	common := strings.Replace(luaCommon, timeNow, testNow, 1)
	script := func(op string) *redis.Script {
		src := common + op
		if mut != nil {
			src = strings.Replace(src, mut.old, mut.new, 1)
		}
		return redis.NewScript(src)
	}
	r.reserveScript, r.settleScript, r.syncScript = script(luaReserve), script(luaSettle), script(luaSync)
	return r
}

func setClock(ctx context.Context, r *RedisStore, now time.Time) error {
	return r.c.Set(ctx, r.state+":clock", now.UnixMicro(), 0).Err()
}

// step is one operation of a parity case, at a time after the case's
// start that is both the host's and the server's clock.
type step struct {
	at       time.Duration
	in       *time.Location // the host's zone at this step; nil: the start's
	reserve  []Estimate
	day      []Estimate // ReserveDay
	settle   []Settlement
	sync     *ServerUsage  // Sync until at+pause
	refused  *Refusal      // Refused; Until is at+pause unless noUntil
	pause    time.Duration // for sync and refused
	noUntil  bool
	set      *Limits  // SetStoredLimits
	clear    []string // ClearStoredLimits
	clearAll bool
	load     bool         // Gate.Load
	edit     func(*State) // Store.Update: a state another version or a stepped clock left
}

// result is what a step returns that a caller sees.
type result struct {
	N     int
	Day   string // ReserveDay's
	Wait  time.Duration
	Why   Reason
	Newly Reason
	Err   string
}

func run(ctx context.Context, g *Gate, st Store, now time.Time, s step) result {
	var r result
	var err error
	switch {
	case s.reserve != nil:
		r.N, r.Wait, r.Why, err = g.Reserve(ctx, now, s.reserve)
	case s.day != nil:
		r.N, r.Day, r.Wait, r.Why, err = g.ReserveDay(ctx, now, s.day)
	case s.settle != nil:
		err = g.Settle(ctx, now, s.settle)
	case s.sync != nil:
		err = g.Sync(ctx, now, now.Add(s.pause), *s.sync)
	case s.refused != nil:
		rf := *s.refused
		if !s.noUntil {
			rf.Until = now.Add(s.pause)
		}
		r.Newly, err = g.Refused(ctx, now, rf)
	case s.set != nil:
		err = SetStoredLimits(ctx, st, *s.set)
	case s.clear != nil || s.clearAll:
		err = ClearStoredLimits(ctx, st, s.clear)
	case s.load:
		err = g.Load(ctx, now)
	case s.edit != nil:
		err = st.Update(ctx, time.Time{}, func(st *State, _ time.Time) ([]LedgerEntry, error) { s.edit(st); return nil, nil })
	}
	if err != nil {
		r.Err = err.Error()
	}
	return r
}

// flat is a State with every time as ns since 1970 (0 for none), so that
// states compare by instant whatever the location.
type flat struct {
	Date                                          string
	DayEndsAt, Updated, PausedUntil               int64
	RequestsPacedUntil, RequestsNextAt            int64
	TokensPacedUntil, TokensNextAt                int64
	TokensWithinMin, RequestsWithinMin            float64
	TokensWithinDay                               int64
	CostWithinDay                                 Cost
	MinuteTokenLimitReached, DayTokenLimitReached bool
	Stored                                        Limits
	Extra                                         [][2]string
}

func ns(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func flatten(s State) flat {
	return flat{
		Date: s.Date, DayEndsAt: ns(s.DayEndsAt), Updated: ns(s.Updated), PausedUntil: ns(s.PausedUntil),
		RequestsPacedUntil: ns(s.RequestsPacedUntil), RequestsNextAt: ns(s.RequestsNextAt),
		TokensPacedUntil: ns(s.TokensPacedUntil), TokensNextAt: ns(s.TokensNextAt),
		TokensWithinMin: s.TokensWithinMin, RequestsWithinMin: s.RequestsWithinMin,
		TokensWithinDay: s.TokensWithinDay, CostWithinDay: s.CostWithinDay,
		MinuteTokenLimitReached: s.MinuteTokenLimitReached, DayTokenLimitReached: s.DayTokenLimitReached,
		Stored: s.Stored, Extra: s.extra,
	}
}

func flatSeen(s Seen) Seen {
	s.At = time.Unix(0, ns(s.At))
	return s
}

// parityCase is a run of steps under one gate's settings.
type parityCase struct {
	name  string
	l     Limits
	slack time.Duration
	zone  *time.Location // Gate.SetDayZone
	start time.Time
	steps []step
}

// parity runs c through a Gate over a MemStore and one over lua, and
// returns the reasons for waiting the steps met, and the first difference.
func parity(ctx context.Context, lua *RedisStore, c parityCase) (map[Reason]int, error) {
	mem := new(MemStore)
	goGate, luaGate := NewGate(mem, c.l), NewGate(lua, c.l)
	for _, g := range []*Gate{goGate, luaGate} {
		g.SetSlack(c.slack)
		g.SetDayZone(c.zone)
	}
	seen := map[Reason]int{}
	for i, s := range c.steps {
		now := c.start.Add(s.at)
		if s.in != nil {
			now = now.In(s.in)
		}
		if err := setClock(ctx, lua, now); err != nil {
			return seen, err
		}
		want := run(ctx, goGate, mem, now, s)
		got := run(ctx, luaGate, lua, now, s)
		if got != want {
			return seen, fmt.Errorf("step %d at %v: Lua = %+v, want %+v as the Go code", i, s.at, got, want)
		}
		st, err := lua.Load(ctx)
		if err != nil {
			return seen, err
		}
		if gs, ws := flatten(st), flatten(mem.State()); !reflect.DeepEqual(gs, ws) {
			return seen, fmt.Errorf("step %d at %v: Lua state = %+v, want %+v as the Go code", i, s.at, gs, ws)
		}
		if gs, ws := flatSeen(luaGate.Seen()), flatSeen(goGate.Seen()); !reflect.DeepEqual(gs, ws) {
			return seen, fmt.Errorf("step %d at %v: Lua gate Seen = %+v, want %+v as the Go code", i, s.at, gs, ws)
		}
		seen[want.Why]++
		seen[want.Newly]++
	}
	return seen, nil
}

// setUpdated is an edit that leaves updated at now+d and the buckets
// holding something: the state a server whose clock stepped back (or a
// failover to one behind) leaves.
func setUpdated(start time.Time, at, d time.Duration) func(*State) {
	return func(s *State) {
		s.Updated = start.Add(at + d)
		s.RequestsWithinMin, s.TokensWithinMin = 30, 3000
	}
}

// parityCases are the cases the scripts must decide as the Go code.
func parityCases() []parityCase {
	plus1 := time.FixedZone("X", 3600)
	late := time.Date(2026, 11, 22, 23, 0, 0, 0, plus1)
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		panic(err)
	}
	kolkata := time.FixedZone("IST", 5*3600+1800)
	tokyo := time.FixedZone("JST", 9*3600)
	// 00:30 on the day summer time ends in New York: the day is 25 hours
	// long, and its midnight's offset (-4) is not its end's (-5).
	fallBack := time.Date(2026, 11, 1, 0, 30, 0, 0, ny)
	springOn := time.Date(2026, 3, 7, 23, 30, 0, 0, ny)
	est := Estimate{Tokens: 1000, Cost: 1000}
	ms := time.Millisecond
	return []parityCase{
		{"rpm", Limits{RPM: 600}, 0, nil, t0, []step{
			{at: 0, reserve: ones(700, 1)},
			{at: 99 * ms, reserve: ones(1, 1)},
			{at: 100 * ms, reserve: ones(5, 1)},
			{at: 1100 * ms, reserve: ones(20, 1)},
		}},
		{"slack", Limits{RPM: 600, TPM: 6000}, DefaultSlack, nil, t0, []step{
			{at: 0, reserve: ones(700, 1)},
			{at: time.Minute, reserve: []Estimate{{Tokens: 1}, {Tokens: 5989}, {Tokens: 1}}},
			{at: 3 * time.Minute, reserve: []Estimate{{Tokens: 6000}}},
		}},
		{"tpm wait", Limits{TPM: 6000}, 0, nil, t0, []step{
			{at: 0, reserve: []Estimate{{Tokens: 5000}}},
			{at: 0, reserve: []Estimate{{Tokens: 5000}}},
			{at: 40 * time.Second, reserve: []Estimate{{Tokens: 5000}}},
		}},
		{"longest wait", Limits{RPM: 60, TPM: 600}, 0, nil, t0, []step{
			{at: 0, reserve: ones(60, 10)},
			{at: 0, reserve: []Estimate{{Tokens: 100}}},
		}},
		{"tpd at midnight", Limits{TPD: 1000}, 0, nil, late, []step{
			{at: 0, reserve: []Estimate{{Tokens: 600}}},
			{at: 0, reserve: []Estimate{{Tokens: 600}}},
			{at: time.Hour - time.Microsecond, reserve: []Estimate{{Tokens: 600}}},
			{at: time.Hour, reserve: []Estimate{{Tokens: 600}}},
		}},
		{"daily cost at midnight", Limits{DailyCost: Dollar}, 0, nil, late, []step{
			{at: 0, reserve: []Estimate{{Tokens: 1, Cost: Dollar * 6 / 10}}},
			{at: 0, reserve: []Estimate{{Tokens: 1, Cost: Dollar * 6 / 10}}},
			{at: time.Hour, reserve: []Estimate{{Tokens: 1, Cost: Dollar * 6 / 10}}},
		}},
		// Beyond 2^53 picodollars a double is not exact; the scripts' costs are.
		{"large dollars", Limits{DailyCost: 20000 * Dollar}, 0, nil, t0, []step{
			{at: 0, reserve: []Estimate{{Tokens: 1, Cost: 12000*Dollar + 1}}},
			{at: 0, reserve: []Estimate{{Tokens: 1, Cost: 8000*Dollar - 1}}},
			{at: 0, reserve: []Estimate{{Tokens: 1, Cost: 1}}},
			{at: 0, settle: []Settlement{{Est: Estimate{Tokens: 1, Cost: 12000*Dollar + 1}, Sent: true, Cost: 3}}},
			{at: 0, reserve: []Estimate{{Tokens: 1, Cost: 12000*Dollar - 3}, {Tokens: 1, Cost: 1}}},
		}},
		{"minute flag", Limits{TPM: 1000}, 0, nil, t0, []step{
			{at: 0, reserve: []Estimate{{Tokens: 900}, {Tokens: 900}}},
			{at: time.Minute, reserve: []Estimate{{Tokens: 900}}},
		}},
		{"settle", Limits{RPM: 100, TPM: 100000, TPD: 1000000}, 0, nil, t0, []step{
			{at: 0, reserve: []Estimate{est, est, est}},
			{at: time.Second, settle: []Settlement{
				{Est: est, Sent: true, Tokens: 300, Cost: 300},
				{Est: est, Sent: true},
				{Est: est, Sent: false},
			}},
		}},
		{"settle after midnight", Limits{RPM: 100, TPD: 1000000}, 0, nil, late, []step{
			{at: 0, reserve: []Estimate{est, est}},
			{at: time.Hour, settle: []Settlement{{Est: est, Sent: true, Tokens: 300, Cost: 300}}},
		}},
		{"pause", Limits{RPM: 100}, 0, nil, t0, []step{
			{at: 0, sync: &ServerUsage{}, pause: 3 * time.Second},
			{at: 0, sync: &ServerUsage{}, pause: time.Second},
			{at: time.Second, reserve: []Estimate{{}}},
			{at: 3 * time.Second, reserve: []Estimate{{}}},
			{at: 4 * time.Second, sync: &ServerUsage{Requests: -1, Tokens: -1}, pause: -time.Second},
		}},
		{"sync", Limits{RPM: 60}, 0, nil, t0, []step{
			{at: 0, sync: &ServerUsage{Requests: 60, Tokens: -1}, pause: time.Second},
			{at: time.Second, reserve: ones(10, 1)},
		}},
		// (e) per-second pacing.
		{"paced requests", Limits{RPM: 600}, 0, nil, t0, []step{
			{at: 0, reserve: ones(20, 1)},
			{at: 0, refused: &Refusal{Limit: MinuteRequests, Used: ServerUsage{Requests: 25, Tokens: -1}}, pause: time.Second},
			{at: ms, refused: &Refusal{Limit: MinuteRequests}, pause: time.Second},
			{at: 10 * ms, reserve: ones(1, 1)},
			{at: time.Second, reserve: ones(5, 1)},
			{at: time.Second + 108*ms, reserve: ones(5, 1)},
			{at: time.Second + 109*ms, reserve: ones(5, 1)},
			{at: 3 * time.Second, reserve: ones(30, 1)},
			{at: 50 * time.Second, refused: &Refusal{}, pause: 2 * time.Second},
			{at: 53 * time.Second, reserve: ones(3, 1)},
			// A minute after the last such refusal the pacing lapses.
			{at: 50*time.Second + time.Minute, reserve: ones(30, 1)},
		}},
		{"paced tokens", Limits{RPM: 1000, TPM: 60000}, 0, nil, t0, []step{
			{at: 0, reserve: ones(10, 60)},
			{at: 0, refused: &Refusal{Limit: MinuteTokens}, noUntil: true},
			{at: 0, reserve: []Estimate{{Tokens: 700}, {Tokens: 333}, {Tokens: 1}}},
			{at: 700 * ms, reserve: []Estimate{{Tokens: 333}}},
			{at: 2 * time.Second, refused: &Refusal{Limit: MinuteTokens, Used: ServerUsage{Requests: -1, Tokens: 5000}}, pause: 1500 * ms},
			{at: 2 * time.Second, reserve: []Estimate{{Tokens: 1}}},
			{at: 3500 * ms, reserve: ones(4, 999)},
			{at: 2*time.Minute + 3*time.Second, reserve: ones(4, 999)},
		}},
		{"refused when full", Limits{RPM: 60, TPM: 600}, 0, nil, t0, []step{
			{at: 0, reserve: ones(60, 10)},
			{at: 0, refused: &Refusal{Limit: MinuteRequests}, pause: time.Second},
			{at: 0, refused: &Refusal{Limit: MinuteTokens}, pause: time.Second},
			{at: time.Second, reserve: ones(3, 1)},
		}},
		// (d) stored limits, ceilings over the gate's own.
		{"stored", Limits{RPM: 600, TPD: 100000}, 0, nil, t0, []step{
			{at: 0, load: true},
			{at: 0, set: &Limits{RPM: 60, TPM: 1200, DailyCost: Dollar}},
			{at: 0, reserve: ones(100, 10)},
			{at: time.Second, load: true},
			{at: time.Second, reserve: []Estimate{{Tokens: 10, CostUnknown: true}}},
			{at: 2 * time.Second, set: &Limits{TPD: 1000, DailyCost: 2 * Dollar}},
			{at: 30 * time.Second, reserve: []Estimate{{Tokens: 500, Cost: Dollar}, {Tokens: 500, Cost: Dollar}, {Tokens: 1}}},
			{at: 31 * time.Second, clear: []string{"rpm", "tpd"}},
			{at: 90 * time.Second, reserve: ones(100, 1)},
			{at: 91 * time.Second, clearAll: true},
			{at: 91 * time.Second, reserve: ones(3, 1)},
			{at: 92 * time.Second, clear: []string{"rpm", "tpx"}},
		}},
		{"stored cost", Limits{DailyCost: Dollar}, 0, nil, t0, []step{
			{at: 0, set: &Limits{DailyCost: Dollar / 2}},
			{at: 0, reserve: []Estimate{{Tokens: 1, Cost: Dollar / 4}, {Tokens: 1, Cost: Dollar / 4}, {Tokens: 1, Cost: 1}}},
			{at: time.Second, settle: []Settlement{{Est: Estimate{Tokens: 1, Cost: Dollar / 4}, Sent: true, Tokens: 1, Cost: 1}}},
			{at: time.Second, set: &Limits{DailyCost: 2 * Dollar}},
			{at: time.Second, reserve: []Estimate{{Tokens: 1, Cost: Dollar / 4}, {Tokens: 1, Cost: Dollar / 4}, {Tokens: 1, Cost: Dollar / 4}}},
		}},
		{"stored cost only", Limits{}, 0, nil, t0, []step{
			{at: 0, set: &Limits{DailyCost: Dollar / 2}},
			{at: 0, reserve: []Estimate{{Tokens: 1, Cost: Dollar / 4}, {Tokens: 1, Cost: Dollar / 4}, {Tokens: 1, Cost: 1}}},
		}},
		// (b) an updated ahead of now: clamped beyond a second, kept within.
		{"clamp", Limits{RPM: 60, TPM: 6000}, 0, nil, t0, []step{
			{at: 0, reserve: ones(1, 1)},
			{at: time.Second, edit: setUpdated(t0, time.Second, 1500*ms)},
			{at: time.Second, reserve: ones(60, 1)},
			{at: 2 * time.Second, reserve: ones(60, 1)},
			{at: 3 * time.Second, edit: setUpdated(t0, 3*time.Second, 900*ms)},
			{at: 3 * time.Second, reserve: ones(60, 1)},
			{at: 4 * time.Second, reserve: ones(60, 1)},
			{at: 5 * time.Second, edit: setUpdated(t0, 5*time.Second, time.Hour)},
			{at: 5 * time.Second, sync: &ServerUsage{Requests: -1, Tokens: -1}},
		}},
		{"clamp while paused", Limits{RPM: 60}, 0, nil, t0, []step{
			{at: 0, sync: &ServerUsage{}, pause: 10 * time.Second},
			{at: time.Second, edit: setUpdated(t0, time.Second, time.Minute)},
			{at: time.Second, reserve: ones(1, 1)},
			{at: 2 * time.Second, reserve: ones(1, 1)},
		}},
		// (a) the day boundary, in zones.
		{"gate zone", Limits{TPD: 1000}, 0, tokyo, time.Date(2026, 11, 22, 14, 0, 0, 0, time.UTC), []step{
			{at: 0, reserve: []Estimate{{Tokens: 600}}},
			{at: 0, in: kolkata, reserve: []Estimate{{Tokens: 600}}},
			{at: time.Hour, reserve: []Estimate{{Tokens: 600}}},
			{at: time.Hour, in: kolkata, reserve: []Estimate{{Tokens: 600}}},
		}},
		{"host zones", Limits{TPD: 1000, RPM: 10}, 0, nil, time.Date(2026, 11, 22, 23, 0, 0, 0, time.FixedZone("PST", -8*3600)), []step{
			{at: 0, reserve: []Estimate{{Tokens: 600}}},
			{at: 0, in: tokyo, reserve: []Estimate{{Tokens: 600}}},
			{at: time.Hour, in: tokyo, reserve: []Estimate{{Tokens: 600}}},
			{at: time.Hour, reserve: []Estimate{{Tokens: 600}}},
			{at: 8 * time.Hour, reserve: ones(11, 1)},
		}},
		{"summer time ends", Limits{TPD: 1000}, 0, ny, fallBack, []step{
			{at: 0, reserve: []Estimate{{Tokens: 600}}},
			{at: 23 * time.Hour, reserve: []Estimate{{Tokens: 600}}},
			{at: 24*time.Hour + 30*time.Minute - time.Microsecond, reserve: []Estimate{{Tokens: 600}}},
			{at: 24*time.Hour + 30*time.Minute, reserve: []Estimate{{Tokens: 600}}},
		}},
		{"summer time starts", Limits{TPD: 1000}, 0, ny, springOn, []step{
			{at: 0, reserve: []Estimate{{Tokens: 600}}},
			{at: 30 * time.Minute, reserve: []Estimate{{Tokens: 600}}},
			{at: 24 * time.Hour, reserve: []Estimate{{Tokens: 600}}},
		}},
		{"day pulled back", Limits{TPD: 1000}, 0, nil, t0, []step{
			{at: 0, reserve: []Estimate{{Tokens: 600}}},
			{at: 0, edit: func(s *State) { s.DayEndsAt = t0.Add(26*time.Hour + time.Second) }},
			{at: 0, reserve: []Estimate{{Tokens: 600}}},
			{at: 12 * time.Hour, reserve: []Estimate{{Tokens: 600}}},
			{at: 12 * time.Hour, edit: func(s *State) { s.DayEndsAt = t0.Add(38*time.Hour - time.Second) }},
			{at: 12 * time.Hour, reserve: []Estimate{{Tokens: 600}}},
		}},
		{"date without day end", Limits{TPD: 1000}, 0, nil, t0, []step{
			{at: 0, edit: func(s *State) { s.Date, s.TokensWithinDay, s.DayEndsAt = "2026-11-22", 600, time.Time{} }},
			{at: 0, reserve: []Estimate{{Tokens: 600}}},
			{at: 0, edit: func(s *State) { s.Date, s.TokensWithinDay, s.DayEndsAt = "2026-11-21", 600, time.Time{} }},
			{at: 0, reserve: []Estimate{{Tokens: 600}}},
		}},
		{"refused across midnight", Limits{RPM: 60, TPD: 100000}, 0, nil, late, []step{
			{at: time.Hour - 500*ms, reserve: ones(60, 100)},
			{at: time.Hour, reserve: ones(1, 1)},
			{at: time.Hour, sync: &ServerUsage{}, pause: time.Second},
			{at: 2 * time.Hour, sync: &ServerUsage{}, pause: time.Second},
			{at: 2 * time.Hour, reserve: ones(1, 1)},
		}},
		// (f) ReserveDay and Settlement.DayOnly.
		{"day only", Limits{RPM: 2, TPM: 100, TPD: 5000, DailyCost: Dollar}, 0, nil, late, []step{
			{at: 0, reserve: ones(2, 50)},
			{at: 0, day: []Estimate{{Tokens: 2000, Cost: Dollar / 4}, {Tokens: 2000, Cost: Dollar / 4}, {Tokens: 2000, Cost: Dollar / 4}}},
			{at: ms, day: []Estimate{{Tokens: 900, Cost: Dollar / 4}, {Tokens: 1, Cost: Dollar / 2}}},
			{at: 2 * ms, settle: []Settlement{
				{Est: Estimate{Tokens: 2000, Cost: Dollar / 4}, DayOnly: true, Sent: true, Tokens: 1500, Cost: Dollar / 8},
				{Est: Estimate{Tokens: 2000, Cost: Dollar / 4}, DayOnly: true},
				{Est: Estimate{Tokens: 50}, Sent: false},
			}},
			{at: time.Hour, day: []Estimate{{Tokens: 5000}}},
			{at: time.Hour, settle: []Settlement{{Est: Estimate{Tokens: 900, Cost: Dollar / 4}, DayOnly: true, Sent: true, Tokens: 900, Cost: Dollar / 4}}},
		}},
		// A Batch API reservation settled the next day: its estimate
		// goes back only from its own day's counters.
		{"day only across midnight", Limits{TPD: 100000}, 0, nil, late, []step{
			{at: 0, day: []Estimate{{Tokens: 5000, Cost: Dollar}}},
			{at: time.Hour, reserve: ones(1, 10)},
			{at: time.Hour, settle: []Settlement{{Est: Estimate{Tokens: 5000, Cost: Dollar}, DayOnly: true, Sent: true, Tokens: 3000, Cost: Dollar / 2, Day: "2026-11-22"}}},
			{at: time.Hour, day: []Estimate{{Tokens: 700}}},
			{at: time.Hour + ms, settle: []Settlement{{Est: Estimate{Tokens: 700}, DayOnly: true, Sent: true, Tokens: 500, Day: "2026-11-23"}}},
			{at: 2 * time.Hour, settle: []Settlement{{Est: Estimate{Tokens: 10}, Sent: true, Tokens: 4}}},
			// The first update of the day after: an estimate of no day
			// is not taken from it.
			{at: 26 * time.Hour, settle: []Settlement{{Sent: true, Tokens: 50}, {Est: Estimate{Tokens: 10}, Sent: true, Tokens: 4}}},
		}},
		// (c) a model without a price under a dollar limit.
		{"cost unknown", Limits{DailyCost: Dollar}, 0, nil, t0, []step{
			{at: 0, reserve: []Estimate{{Tokens: 1, Cost: 1}, {Tokens: 1, CostUnknown: true}}},
			{at: 0, day: []Estimate{{Tokens: 1, CostUnknown: true}}},
		}},
	}
}

// runParity runs every case on the Redis at url, each its own budget.
func runParity(t *testing.T, url string) {
	ctx := context.Background()
	for _, c := range parityCases() {
		t.Run(c.name, func(t *testing.T) {
			if _, err := parity(ctx, clocked(t, url, "parity-"+c.name, nil), c); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// The scripts decide as the Go code does: the same admissions, waits,
// reasons and newly paced limits, the same Seen, and the same state.
func TestRedisParity(t *testing.T) {
	runParity(t, "redis://"+miniredis.RunT(t).Addr()+"/0")
}

// Redis's own Lua (not miniredis's) decides as the Go code does too.
func TestRedisParityReal(t *testing.T) {
	runParity(t, redistest.Start(t).URL(""))
}

// Each of these changes to the scripts is a change of what they decide;
// the parity cases must see every one, so that a change to either side
// that the other does not follow fails them.
func TestRedisParityCatchesChanges(t *testing.T) {
	url := "redis://" + miniredis.RunT(t).Addr() + "/0"
	ctx := context.Background()
	mi := 0
	for _, m := range []mutation{
		{"MAX_FUTURE = US ", "MAX_FUTURE = 2 * US "},
		{"MAX_DAY = 26 * 3600 * US", "MAX_DAY = 27 * 3600 * US"},
		{"PACE_LAPSE = 60 * US", "PACE_LAPSE = 61 * US"},
		{"PACE_SHARE = 0.98", "PACE_SHARE = 0.97"},
		{"  lapse_pace(s, now)\n  return rolled", "  return rolled"},
		{"return math.min(a, b)", "return math.max(a, b)"},
		{"cgt(c, own.cost)", "cgt(own.cost, c)"},
		{"if now >= day_start then", "if false then"},
		{"if s.date == today then", "if false then"},
		{"if s.day_ends - now > MAX_DAY then", "if false then"},
		{"and ARGV[i + 3] ~= '1'", ""},
		{"(day ~= '' and day == s.date)", "(day ~= '')"},
		{"(day == '' and same)", "(day == '')"},
		{"    s.tday = s.tday + tok\n    s.cday = cadd(s.cday, c)\n", "    s.tday = s.tday + tok\n    s.cday = cadd(s.cday, c)\n    s.rmin = s.rmin + 1\n"},
		{"local dl = {rpm = 0, tpm = 0,", "local dl = {rpm = l.rpm, tpm = l.tpm,"},
		{"roomy(s.rmin, l.rpm)", "true"},
		{"roomy(s.tmin, l.tpm)", "true"},
		{"s.rnext = later(s.rnext, till)", "s.rnext = s.rnext"},
		{"s.tnext = later(s.tnext, till)", "s.tnext = s.tnext"},
		{"    s.rnext = add_ns(later(s.rnext, now), interval(1, l.rpm))", "    s.rnext = add_ns(later(s.rnext, now), interval(1, l.rpm) + 1)"},
		{"hold((s.tnext[1] - now) * 1000 + s.tnext[2], PACED_TOKENS)", "hold((s.tnext[1] - now) * 1000, PACED_TOKENS)"},
		{"return reply(0, wait, why, raw)", "return reply(0, wait, why, seen(s))"},
		{"  if clamped then\n    save(s)", "  if false then\n    save(s)"},
		{"if till and till > s.paused then", "if till and till > s.paused and till > now then"},
		{"'lrpm', 'ltpm', 'ltpd', 'lcost')", "'lrpm', 'ltpm', 'lcost', 'lcost')"},
	} {
		m := m
		mi++
		t.Run(m.old, func(t *testing.T) {
			src := luaCommon + luaReserve + luaSettle + luaSync
			if !strings.Contains(src, m.old) {
				t.Fatalf("the scripts have no %q to change", m.old)
			}
			for i, c := range parityCases() {
				if _, err := parity(ctx, clocked(t, url, fmt.Sprintf("mutant-%d-%d", mi, i), &m), c); err != nil {
					t.Logf("case %s: %v", c.name, err)
					return
				}
			}
			t.Errorf("with %q as %q the scripts still decide as the Go code on every case: the cases do not test it", m.old, m.new)
		})
	}
}

// On a long random run across a midnight, with limits that divide nothing
// evenly, pacing switched on and lapsing, stored limits set and cleared
// and Batch API lines, the scripts stay bit for bit with the Go code.
func TestRedisParityRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	zone := time.FixedZone("IST", 5*3600+1800)
	start := time.Date(2026, 11, 22, 23, 57, 0, 0, zone)
	var steps []step
	var at time.Duration
	type open struct {
		e    Estimate
		day  bool
		date string // the host's date when it was reserved
	}
	var opened []open
	estimates := func() []Estimate {
		ests := make([]Estimate, 1+rng.IntN(16))
		// Small dear ones meet the rpm and dollar limits, large cheap ones
		// the token limits.
		small := rng.IntN(2) == 0
		for i := range ests {
			if small {
				ests[i] = Estimate{Tokens: 1 + rng.Int64N(40), Cost: Cost(rng.Int64N(4e8))}
			} else {
				tok := 1 + rng.Int64N(3000)
				ests[i] = Estimate{Tokens: tok, Cost: Cost(tok * 10)}
			}
		}
		return ests
	}
	for range 1500 {
		at += time.Duration(rng.IntN(3_000_000)) * time.Microsecond
		switch k := rng.IntN(100); {
		case k < 60:
			ests := estimates()
			steps = append(steps, step{at: at, reserve: ests})
			for _, e := range ests {
				opened = append(opened, open{e, false, ""})
			}
		case k < 66:
			ests := estimates()
			steps = append(steps, step{at: at, day: ests})
			for _, e := range ests {
				opened = append(opened, open{e, true, start.Add(at).Format(time.DateOnly)})
			}
		case k < 84 && len(opened) > 0:
			n := 1 + rng.IntN(len(opened))
			var ss []Settlement
			for _, o := range opened[:n] {
				used := rng.Int64N(o.e.Tokens + 1)
				st := Settlement{Est: o.e, Sent: rng.IntN(4) > 0, Tokens: used, Cost: Cost(used * 300), DayOnly: o.day}
				if o.day {
					// The day it was counted in, another or none.
					st.Day = []string{"", o.date, "2026-11-22", "2026-11-23"}[rng.IntN(4)]
				}
				ss = append(ss, st)
			}
			opened = opened[n:]
			steps = append(steps, step{at: at, settle: ss})
		case k < 90:
			u := ServerUsage{Requests: float64(rng.IntN(120)) - 20, Tokens: rng.Float64()*30000 - 5000}
			steps = append(steps, step{at: at, sync: &u, pause: time.Duration(1+rng.IntN(2000)) * time.Millisecond})
		case k < 96:
			u := ServerUsage{Requests: float64(rng.IntN(120)) - 20, Tokens: rng.Float64()*30000 - 5000}
			lim := []Reason{MinuteRequests, MinuteTokens, ""}[rng.IntN(3)]
			steps = append(steps, step{at: at, refused: &Refusal{Limit: lim, Used: u}, pause: time.Duration(rng.IntN(2000)) * time.Millisecond})
		case k < 98:
			steps = append(steps, step{at: at, set: &Limits{RPM: 50 + rng.Int64N(100), TPD: 20000 + rng.Int64N(20000)}})
		default:
			steps = append(steps, step{at: at, clear: []string{[]string{"rpm", "tpd"}[rng.IntN(2)]}})
		}
	}
	c := parityCase{"random", Limits{RPM: 97, TPM: 20011, TPD: 30011, DailyCost: Dollar / 100}, DefaultSlack, nil, start, steps}
	seen, err := parity(context.Background(), clocked(t, "redis://"+miniredis.RunT(t).Addr()+"/0", "random", nil), c)
	if err != nil {
		t.Fatal(err)
	}
	for _, why := range []Reason{"", MinuteRequests, MinuteTokens, DayTokens, DayCost, BackOff, PacedRequests, PacedTokens} {
		if seen[why] == 0 {
			t.Errorf("the run met no step that returned %q: it does not test it", why)
		}
	}
	t.Logf("reasons met: %v", seen)
}

// A host whose clock is days off the server's starts a day at the fixed
// offset of its zone: the server's date, never the host's.
func TestRedisDayFarOff(t *testing.T) {
	ctx := context.Background()
	r := clocked(t, "redis://"+miniredis.RunT(t).Addr()+"/0", "far", nil)
	kolkata := time.FixedZone("IST", 5*3600+1800)
	server := time.Date(2026, 11, 22, 20, 0, 0, 0, time.UTC) // 01:30 on the 23rd in Kolkata
	if err := setClock(ctx, r, server); err != nil {
		t.Fatal(err)
	}
	g := NewGate(r, Limits{TPD: 1000})
	for _, host := range []time.Time{server.Add(-9 * 24 * time.Hour), server.Add(40 * 24 * time.Hour)} {
		if err := r.Update(ctx, time.Time{}, func(s *State, _ time.Time) ([]LedgerEntry, error) { *s = State{}; return nil, nil }); err != nil {
			t.Fatal(err)
		}
		if n, _, _, err := g.Reserve(ctx, host.In(kolkata), []Estimate{{Tokens: 600}}); err != nil || n != 1 {
			t.Fatalf("Reserve from a host at %v = %d, %v; want 1", host, n, err)
		}
		st, err := r.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := time.Date(2026, 11, 24, 0, 0, 0, 0, kolkata); st.Date != "2026-11-23" || !st.DayEndsAt.Equal(want) {
			t.Errorf("a host at %v started day %s ending %v; want 2026-11-23 ending %v", host, st.Date, st.DayEndsAt, want)
		}
	}
}

// The Lua's pacing share is the Go constant: a change to one without the
// other fails here, not only in the parity cases.
func TestLuaPaceShare(t *testing.T) {
	want := fmt.Sprintf("local PACE_SHARE = %v ", PaceShare)
	if !strings.Contains(luaCommon, want) {
		t.Errorf("common.lua lacks %q: keep it equal to pace.go's PaceShare", want)
	}
}
