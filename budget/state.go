package budget

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// State is the shared budget's use, usage.md's content; zero is fresh.
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

// DayUsed is what the day counters hold at now: today's tokens and
// dollars, or nothing once the day has ended.
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

// maxLevel bounds a bucket's level, low enough to format and parse back.
const maxLevel = 1e15

// A field is a key of usage.md and where its value goes; optional: if set.
type field struct {
	key      string
	p        any
	optional bool
}

// fields are the keys in Format's order; the first six keep their spelling.
func (s *State) fields() []field {
	return []field{
		{"Date", &s.Date, false},
		{"tokens_within_min", &s.TokensWithinMin, false},
		{"requests_within_min", &s.RequestsWithinMin, false},
		{"tokens_within_day", &s.TokensWithinDay, false},
		{"minute_token_limit_reached", &s.MinuteTokenLimitReached, false},
		{"day_token_limit_reached", &s.DayTokenLimitReached, false},
		{"cost_within_day_usd", &s.CostWithinDay, false},
		{"updated", &s.Updated, false},
		{"paused_until", &s.PausedUntil, false},
		{"day_ends_at", &s.DayEndsAt, false},
		// Pacing only while on, so that most files stay as short as they were.
		{"requests_paced_until", &s.RequestsPacedUntil, true},
		{"requests_next_at", &s.RequestsNextAt, true},
		{"tokens_paced_until", &s.TokensPacedUntil, true},
		{"tokens_next_at", &s.TokensNextAt, true},
		{"limit_rpm", &s.Stored.RPM, true},
		{"limit_tpm", &s.Stored.TPM, true},
		{"limit_tpd", &s.Stored.TPD, true},
		{"limit_daily_cost_usd", &s.Stored.DailyCost, true},
	}
}

// ParseState reads usage.md: "key = value" lines, comments and blank
// lines; unknown keys and comments but the header are kept for Format. An
// error names the line. A file with none of gptbatch's keys is an error:
// taking an emptied file for a fresh one would drop the day's spending.
func ParseState(b []byte) (State, error) {
	var s State
	fields := s.fields()
	seen := map[string]int{}
	for i, raw := range bytes.Split(b, []byte("\n")) {
		n := i + 1
		line := strings.TrimSpace(string(raw))
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "#") {
			if !strings.Contains("\n"+header, "\n"+line+"\n") { // the header is Format's
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
		f := slices.IndexFunc(fields, func(f field) bool { return f.key == k })
		if f < 0 {
			s.extra = append(s.extra, [2]string{k, v})
			continue // unknown keys may repeat; a later version knows why
		}
		if err := fields[f].parse(v); err != nil {
			return State{}, fmt.Errorf("line %d: %s: %w", n, k, err)
		}
		seen[k] = n
	}
	if len(seen) == 0 {
		return State{}, errors.New("none of the keys gptbatch writes (Date, tokens_within_day, ...): emptied, or not a usage file")
	}
	return s, nil
}

// parse sets the field to v.
func (f field) parse(v string) error {
	switch p := f.p.(type) {
	case *string:
		if _, err := time.Parse(time.DateOnly, v); v != "" && err != nil {
			return errors.New("not a date (YYYY-MM-DD)")
		}
		*p = v
	case *float64:
		l, err := strconv.ParseFloat(v, 64)
		switch {
		case err != nil || math.IsNaN(l):
			return errors.New("not a number")
		case l < 0:
			return errors.New("negative")
		case l > maxLevel:
			return fmt.Errorf("larger than %g", maxLevel)
		}
		*p = l + 0 // no -0
	case *int64:
		n, err := strconv.ParseInt(v, 10, 64)
		switch {
		case err != nil:
			return errors.New("not a whole number")
		case n < 0:
			return errors.New("negative")
		}
		*p = n
	case *Cost:
		c, err := ParseCost(v)
		if err != nil {
			return errors.New("not a non-negative amount of dollars")
		}
		*p = c
	case *bool:
		if v != "0" && v != "1" {
			return errors.New("not 0 or 1")
		}
		*p = v == "1"
	case *time.Time:
		if v == "" {
			return nil
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return errors.New("not an RFC 3339 time")
		}
		*p = t
	}
	return nil
}

// Format writes s as usage.md, which ParseState reads back as s (levels
// rounded to 3 decimals; a value it would refuse as the nearest it takes).
func (s State) Format() []byte {
	var b bytes.Buffer
	b.WriteString(header)
	for _, c := range s.comments {
		b.WriteString(c + "\n")
	}
	for _, f := range s.fields() {
		if v := f.format(); !f.optional || (v != "" && v != "0") {
			b.WriteString(f.key + " = " + v + "\n")
		}
	}
	for _, e := range s.extra {
		b.WriteString(e[0] + " = " + e[1] + "\n")
	}
	return b.Bytes()
}

// format is the field's value as ParseState reads it.
func (f field) format() string {
	switch p := f.p.(type) {
	case *string:
		if _, err := time.Parse(time.DateOnly, *p); err != nil {
			return ""
		}
		return *p
	case *float64:
		l := *p
		if !(l > 0) { // also NaN
			l = 0
		}
		return strconv.FormatFloat(min(l, maxLevel), 'f', 3, 64)
	case *int64:
		return strconv.FormatInt(max(*p, 0), 10)
	case *Cost:
		return max(*p, 0).String()
	case *bool:
		if *p {
			return "1"
		}
		return "0"
	case *time.Time:
		if y := p.Year(); p.IsZero() || y < 0 || y > 9999 { // beyond RFC 3339
			return ""
		}
		return string(appendTime(nil, *p))
	}
	panic("budget: a usage.md field of an unknown type")
}

// appendTime appends t as RFC 3339 does, which writes a zone's offset in
// whole minutes: t in a zone whose offset has seconds is written in UTC,
// or it would read back those seconds off.
func appendTime(b []byte, t time.Time) []byte {
	if _, off := t.Zone(); off%60 != 0 {
		t = t.UTC()
	}
	return t.AppendFormat(b, time.RFC3339Nano)
}
