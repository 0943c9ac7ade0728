package budget

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// State is the content of usage.md: what every gptbatch sharing the file
// has used. The zero value is a fresh file.
type State struct {
	Date                    string    // the local day the day counters belong to, YYYY-MM-DD
	Updated                 time.Time // when the minute buckets were last drained
	TokensWithinMin         float64   // the minute token bucket: drains at TPM/60 a second
	RequestsWithinMin       float64   // the minute request bucket: drains at RPM/60 a second
	TokensWithinDay         int64
	CostWithinDay           Cost
	MinuteTokenLimitReached bool // the last refusal was the minute token limit
	DayTokenLimitReached    bool
	PausedUntil             time.Time // after a 429, nobody sends before this

	extra [][2]string // keys this version does not know, kept in order
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
)

const header = `# gptbatch usage: shared by every gptbatch that names this file.
# tokens_within_min and requests_within_min are what still counts against
# the last minute (they drain at the limit's rate). Do not edit while
# gptbatch runs; it holds usage.md.lock while it reads and writes.
`

// ParseState reads usage.md. Comments (#) and blank lines are allowed;
// every other line is "key = value". Errors name the line.
func ParseState(b []byte) (State, error) {
	var s State
	seen := map[string]bool{}
	for n, raw := range bytes.Split(b, []byte("\n")) {
		line := strings.TrimSpace(string(raw))
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fail := func(format string, args ...any) (State, error) {
			return State{}, fmt.Errorf("line %d: %s", n+1, fmt.Sprintf(format, args...))
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return fail("not a key = value line")
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if k == "" {
			return fail("no key")
		}
		if seen[k] {
			return fail("%s given twice", k)
		}
		seen[k] = true
		var err error
		switch k {
		case keyTokensMin:
			s.TokensWithinMin, err = parseLevel(v)
		case keyRequestsMin:
			s.RequestsWithinMin, err = parseLevel(v)
		case keyTokensDay:
			s.TokensWithinDay, err = strconv.ParseInt(v, 10, 64)
			if err == nil && s.TokensWithinDay < 0 {
				err = fmt.Errorf("negative")
			}
		case keyCostDay:
			s.CostWithinDay, err = ParseCost(v)
		case keyMinReached:
			s.MinuteTokenLimitReached, err = parseFlag(v)
		case keyDayReached:
			s.DayTokenLimitReached, err = parseFlag(v)
		case keyDate:
			if v != "" {
				_, err = time.Parse(time.DateOnly, v)
			}
			s.Date = v
		case keyUpdated:
			s.Updated, err = parseTime(v)
		case keyPaused:
			s.PausedUntil, err = parseTime(v)
		default:
			s.extra = append(s.extra, [2]string{k, v})
		}
		if err != nil {
			return fail("%s: %q is not a valid value", k, v)
		}
	}
	return s, nil
}

func parseLevel(v string) (float64, error) {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || f != f || f > 1e18 {
		return 0, fmt.Errorf("bad level")
	}
	return f, nil
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
	return time.Parse(time.RFC3339Nano, v)
}

// Format writes s as usage.md: a header comment, then the keys in a fixed
// order, then any keys this version did not know.
func (s State) Format() []byte {
	var b bytes.Buffer
	b.WriteString(header)
	flag := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	tm := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.Format(time.RFC3339Nano)
	}
	fmt.Fprintf(&b, "%s = %s\n", keyDate, s.Date)
	fmt.Fprintf(&b, "%s = %s\n", keyTokensMin, strconv.FormatFloat(s.TokensWithinMin, 'f', -1, 64))
	fmt.Fprintf(&b, "%s = %s\n", keyRequestsMin, strconv.FormatFloat(s.RequestsWithinMin, 'f', -1, 64))
	fmt.Fprintf(&b, "%s = %d\n", keyTokensDay, s.TokensWithinDay)
	fmt.Fprintf(&b, "%s = %d\n", keyMinReached, flag(s.MinuteTokenLimitReached))
	fmt.Fprintf(&b, "%s = %d\n", keyDayReached, flag(s.DayTokenLimitReached))
	fmt.Fprintf(&b, "%s = %s\n", keyCostDay, s.CostWithinDay)
	fmt.Fprintf(&b, "%s = %s\n", keyUpdated, tm(s.Updated))
	fmt.Fprintf(&b, "%s = %s\n", keyPaused, tm(s.PausedUntil))
	for _, kv := range s.extra {
		fmt.Fprintf(&b, "%s = %s\n", kv[0], kv[1])
	}
	return b.Bytes()
}
