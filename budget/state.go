package budget

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// State is the content of usage.md: what every gptbatch sharing the file
// has used. The zero value is a fresh file.
type State struct {
	Date                    string    // the day the day counters belong to, YYYY-MM-DD, in the zone that started it
	DayEndsAt               time.Time // the instant the day counters start again, the same for every process
	Updated                 time.Time // when the minute buckets were last drained
	TokensWithinMin         float64   // the minute token bucket's level: drains at TPM/60 a second
	RequestsWithinMin       float64   // the minute request bucket's level: drains at RPM/60 a second
	TokensWithinDay         int64
	CostWithinDay           Cost
	MinuteTokenLimitReached bool      // the last refusal was the minute token limit
	DayTokenLimitReached    bool      // the last refusal was the day token limit
	PausedUntil             time.Time // after a 429, nobody sends before this
	RequestsPacedUntil      time.Time // the request limit is paced per second until this (see Gate.Refused)
	RequestsNextAt          time.Time // when paced, the earliest the next request may go
	TokensPacedUntil        time.Time // the token limit is paced per second until this
	TokensNextAt            time.Time // when paced, the earliest the next tokens may go
	Stored                  Limits    // limits stored with the budget: ceilings for every run (see Limits.Ceil)

	extra    [][2]string // keys this version does not know, kept in order
	comments []string    // comment lines someone added, kept in order (not the header's)
}

// The keys of usage.md. The first six are the original file's and keep
// their spelling.
const (
	keyTokensMin   = "tokens_within_min"
	keyRequestsMin = "requests_within_min"
	keyTokensDay   = "tokens_within_day"
	keyMinReached  = "minute_token_limit_reached"
	keyDayReached  = "day_token_limit_reached"
	keyDate        = "Date"
	keyCostDay     = "cost_within_day_usd"
	keyUpdated     = "updated"
	keyPaused      = "paused_until"
	keyDayEnds     = "day_ends_at"
	keyReqPaced    = "requests_paced_until"
	keyReqNext     = "requests_next_at"
	keyTokPaced    = "tokens_paced_until"
	keyTokNext     = "tokens_next_at"
	keyLimitRPM    = "limit_rpm"
	keyLimitTPM    = "limit_tpm"
	keyLimitTPD    = "limit_tpd"
	keyLimitCost   = "limit_daily_cost_usd"
)

const header = `# gptbatch usage file: the limits' counters shared by every gptbatch that
# names this file (--usage-file, GPTBATCH_USAGE_FILE), in any directory.
# tokens_within_min and requests_within_min are what still counts against
# the last minute: they drain at the limit's own rate from "updated" on.
# The day counters start again at day_ends_at: midnight in the time zone
# of the gptbatch that started the day (or GPTBATCH_DAY_TZ), the same
# instant for every gptbatch whatever its own zone. gptbatch holds the lock
# file beside this one while it reads and rewrites it; do not edit it while
# gptbatch runs. The ledger of every call is the .ledger.jsonl beside it.
`

// headerLines are the lines of header, which Format writes itself.
var headerLines = func() map[string]bool {
	m := map[string]bool{}
	for _, l := range strings.Split(header, "\n") {
		m[strings.TrimSpace(l)] = true
	}
	return m
}()

// DayUsed is what the day counters hold at now: the tokens and dollars
// used today, or nothing once the day has ended. A file without
// day_ends_at counts as today's when its Date is now's date.
func (s State) DayUsed(now time.Time) (tokens int64, cost Cost) {
	today := now.Before(s.DayEndsAt)
	if s.DayEndsAt.IsZero() {
		today = s.Date == now.Format(time.DateOnly)
	}
	if !today {
		return 0, 0
	}
	return s.TokensWithinDay, s.CostWithinDay
}

// maxLevel bounds a minute bucket's level: far above any limit, and low
// enough that every level formats and parses back the same.
const maxLevel = 1e15

// ParseState reads usage.md. Comments (#) and blank lines are allowed;
// every other line is "key = value". Unknown keys and comments (other
// than the header Format writes) are kept, in order, for Format to write
// back. An error names the line and what is wrong with it. A file with
// none of the keys gptbatch writes (emptied, or another file put in its
// place) is an error too: a fresh budget is no file at all, and taking
// such a file for one would drop the day's spending and stored limits.
func ParseState(b []byte) (State, error) {
	var s State
	seen := map[string]int{}
	for i, raw := range bytes.Split(b, []byte("\n")) {
		n := i + 1
		line := strings.TrimSpace(string(raw))
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "#") {
			if !headerLines[line] {
				s.comments = append(s.comments, line)
			}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return State{}, fmt.Errorf("line %d: not a key = value line", n)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if k == "" {
			return State{}, fmt.Errorf("line %d: no key before =", n)
		}
		if first, dup := seen[k]; dup {
			return State{}, fmt.Errorf("line %d: %s: given twice (first on line %d)", n, k, first)
		}
		var err error
		switch k {
		case keyTokensMin:
			s.TokensWithinMin, err = parseLevel(v)
		case keyRequestsMin:
			s.RequestsWithinMin, err = parseLevel(v)
		case keyTokensDay:
			s.TokensWithinDay, err = parseCount(v)
		case keyCostDay:
			s.CostWithinDay, err = ParseCost(v)
			if err != nil {
				err = fmt.Errorf("not a non-negative amount of dollars")
			}
		case keyMinReached:
			s.MinuteTokenLimitReached, err = parseFlag(v)
		case keyDayReached:
			s.DayTokenLimitReached, err = parseFlag(v)
		case keyDate:
			if _, perr := time.Parse(time.DateOnly, v); v != "" && perr != nil {
				err = fmt.Errorf("not a date (YYYY-MM-DD)")
			}
			s.Date = v
		case keyUpdated:
			s.Updated, err = parseTime(v)
		case keyPaused:
			s.PausedUntil, err = parseTime(v)
		case keyDayEnds:
			s.DayEndsAt, err = parseTime(v)
		case keyReqPaced:
			s.RequestsPacedUntil, err = parseTime(v)
		case keyReqNext:
			s.RequestsNextAt, err = parseTime(v)
		case keyTokPaced:
			s.TokensPacedUntil, err = parseTime(v)
		case keyTokNext:
			s.TokensNextAt, err = parseTime(v)
		case keyLimitRPM:
			s.Stored.RPM, err = parseCount(v)
		case keyLimitTPM:
			s.Stored.TPM, err = parseCount(v)
		case keyLimitTPD:
			s.Stored.TPD, err = parseCount(v)
		case keyLimitCost:
			s.Stored.DailyCost, err = ParseCost(v)
			if err != nil {
				err = fmt.Errorf("not a non-negative amount of dollars")
			}
		default:
			s.extra = append(s.extra, [2]string{k, v})
			continue // unknown keys may repeat; a later version knows why
		}
		if err != nil {
			return State{}, fmt.Errorf("line %d: %s: %w", n, k, err)
		}
		seen[k] = n
	}
	if len(seen) == 0 {
		return State{}, fmt.Errorf("none of the keys gptbatch writes (%s, %s, ...): emptied, or not a usage file", keyDate, keyTokensDay)
	}
	return s, nil
}

func parseLevel(v string) (float64, error) {
	f, err := strconv.ParseFloat(v, 64)
	switch {
	case err != nil || math.IsNaN(f):
		return 0, fmt.Errorf("not a number")
	case f < 0:
		return 0, fmt.Errorf("negative")
	case f > maxLevel:
		return 0, fmt.Errorf("larger than %g", maxLevel)
	}
	return f + 0, nil // no -0
}

func parseCount(v string) (int64, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	switch {
	case err != nil:
		return 0, fmt.Errorf("not a whole number")
	case n < 0:
		return 0, fmt.Errorf("negative")
	}
	return n, nil
}

func parseFlag(v string) (bool, error) {
	switch v {
	case "0":
		return false, nil
	case "1":
		return true, nil
	}
	return false, fmt.Errorf("not 0 or 1")
}

func parseTime(v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("not an RFC 3339 time")
	}
	return t, nil
}

// Format writes s as usage.md: a header comment saying what the file is,
// the comments ParseState kept, the keys in a fixed order (bucket levels with 3 decimals), then the keys
// this version does not know. ParseState reads it back as s, bucket levels
// rounded to 3 decimals. Values ParseState would refuse (negative
// counters, a level beyond any limit) are written as the nearest it
// accepts, so that gptbatch never writes a usage.md it cannot read.
func (s State) Format() []byte {
	var b bytes.Buffer
	b.WriteString(header)
	for _, c := range s.comments {
		b.WriteString(c + "\n")
	}
	kv := func(k, v string) { b.WriteString(k + " = " + v + "\n") }
	date := s.Date
	if _, err := time.Parse(time.DateOnly, date); err != nil {
		date = ""
	}
	kv(keyDate, date)
	kv(keyTokensMin, formatLevel(s.TokensWithinMin))
	kv(keyRequestsMin, formatLevel(s.RequestsWithinMin))
	kv(keyTokensDay, strconv.FormatInt(max(s.TokensWithinDay, 0), 10))
	kv(keyMinReached, formatFlag(s.MinuteTokenLimitReached))
	kv(keyDayReached, formatFlag(s.DayTokenLimitReached))
	kv(keyCostDay, max(s.CostWithinDay, 0).String())
	kv(keyUpdated, formatTime(s.Updated))
	kv(keyPaused, formatTime(s.PausedUntil))
	kv(keyDayEnds, formatTime(s.DayEndsAt))
	// Pacing is written only while on, so that a file of a server with
	// true minute buckets stays as short as it was.
	for _, p := range []struct {
		k string
		t time.Time
	}{{keyReqPaced, s.RequestsPacedUntil}, {keyReqNext, s.RequestsNextAt}, {keyTokPaced, s.TokensPacedUntil}, {keyTokNext, s.TokensNextAt}} {
		if !p.t.IsZero() {
			kv(p.k, formatTime(p.t))
		}
	}
	// Stored limits, set by `gptbatch limits set`: written only when set.
	for _, p := range []struct {
		k string
		v int64
	}{{keyLimitRPM, s.Stored.RPM}, {keyLimitTPM, s.Stored.TPM}, {keyLimitTPD, s.Stored.TPD}} {
		if p.v > 0 {
			kv(p.k, strconv.FormatInt(p.v, 10))
		}
	}
	if s.Stored.DailyCost > 0 {
		kv(keyLimitCost, s.Stored.DailyCost.String())
	}
	for _, e := range s.extra {
		kv(e[0], e[1])
	}
	return b.Bytes()
}

// formatLevel writes a bucket level with 3 decimals, within the range
// ParseState accepts.
func formatLevel(f float64) string {
	if !(f > 0) { // also NaN
		f = 0
	}
	return strconv.FormatFloat(min(f, maxLevel), 'f', 3, 64)
}

func formatFlag(v bool) string {
	if v {
		return "1"
	}
	return "0"
}

func formatTime(t time.Time) string {
	if t.IsZero() || t.Year() < 0 || t.Year() > 9999 { // beyond RFC 3339
		return ""
	}
	return t.Format(time.RFC3339Nano)
}
