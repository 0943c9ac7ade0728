package budget

import (
	"bytes"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestStateRoundTrip(t *testing.T) {
	zone := time.FixedZone("X", -5*3600)
	for _, tt := range []struct {
		name string
		s    State
	}{
		{"zero", State{}},
		{"full", State{
			Date: "2026-11-22", Updated: time.Date(2026, 11, 22, 12, 0, 0, 123456789, zone),
			TokensWithinMin: 1234.5, RequestsWithinMin: 3.25, TokensWithinDay: 99, CostWithinDay: 7_500_000,
			MinuteTokenLimitReached: true, DayTokenLimitReached: true, PausedUntil: time.Date(2026, 11, 22, 12, 0, 1, 0, time.UTC),
			DayEndsAt: time.Date(2026, 11, 23, 0, 0, 0, 0, zone),
			extra:     [][2]string{{"future_key", "x = y"}, {"future_key", ""}, {"another", "2"}},
		}},
		// RFC 3339 writes offsets in whole minutes: these 17 s must not be lost.
		{"offset with seconds", State{Updated: time.Date(2026, 11, 22, 12, 0, 0, 5, time.FixedZone("noon", -(4*60+17)))}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseState(tt.s.Format())
			if err != nil {
				t.Fatalf("ParseState(Format(s)) = %v", err)
			}
			if !statesEqual(got, tt.s) {
				t.Errorf("ParseState(Format(s)) = %+v, want %+v", got, tt.s)
			}
		})
	}
}

// statesEqual compares states with times by instant.
func statesEqual(a, b State) bool {
	if !a.Updated.Equal(b.Updated) || !a.PausedUntil.Equal(b.PausedUntil) || !a.DayEndsAt.Equal(b.DayEndsAt) {
		return false
	}
	a.Updated, b.Updated, a.PausedUntil, b.PausedUntil = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	a.DayEndsAt, b.DayEndsAt = time.Time{}, time.Time{}
	return reflect.DeepEqual(a, b)
}

// The file a user opens: a header saying what it is, the seed keys spelled
// as they always were, levels with 3 decimals, unknown keys kept.
func TestFormat(t *testing.T) {
	s := State{Date: "2026-11-22", TokensWithinMin: 2.0 / 3, RequestsWithinMin: 1, TokensWithinDay: 5, CostWithinDay: Dollar / 8,
		DayTokenLimitReached: true, extra: [][2]string{{"note", "kept"}}}
	out := string(s.Format())
	if !strings.HasPrefix(out, "# gptbatch usage file") || !strings.Contains(out, "every gptbatch") {
		t.Errorf("Format() does not start with a header saying what the file is:\n%s", out)
	}
	var keys []string
	for line := range strings.Lines(out) {
		if !strings.HasPrefix(line, "#") {
			keys = append(keys, strings.TrimSpace(line))
		}
	}
	want := []string{
		"Date = 2026-11-22",
		"tokens_within_min = 0.667",
		"requests_within_min = 1.000",
		"tokens_within_day = 5",
		"minute_token_limit_reached = 0",
		"day_token_limit_reached = 1",
		"cost_within_day_usd = 0.125",
		"updated =",
		"paused_until =",
		"day_ends_at =",
		"note = kept",
	}
	if !reflect.DeepEqual(keys, want) {
		t.Errorf("Format() lines =\n%s\nwant\n%s", strings.Join(keys, "\n"), strings.Join(want, "\n"))
	}
}

// Whatever the State holds, Format writes a file ParseState reads.
func TestFormatAlwaysParses(t *testing.T) {
	for _, s := range []State{
		{TokensWithinMin: math.NaN(), RequestsWithinMin: math.Inf(1)},
		{TokensWithinMin: -3, TokensWithinDay: -1, CostWithinDay: -Dollar},
		{Date: "tomorrow", Updated: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		if _, err := ParseState(s.Format()); err != nil {
			t.Errorf("ParseState(Format(%+v)) = %v, want nil", s, err)
		}
	}
}

// The original file's keys, as a user or an older tool wrote them.
func TestParseStateSeedKeys(t *testing.T) {
	in := "# my limits\r\n\r\nDate=2026-11-22\r\n  tokens_within_min = 10 \r\nrequests_within_min = 2.5\r\ntokens_within_day = 700\r\n" +
		"minute_token_limit_reached = 1\r\nday_token_limit_reached = 0\r\n"
	got, err := ParseState([]byte(in))
	want := State{Date: "2026-11-22", TokensWithinMin: 10, RequestsWithinMin: 2.5, TokensWithinDay: 700, MinuteTokenLimitReached: true,
		comments: []string{"# my limits"}}
	if err != nil || !statesEqual(got, want) {
		t.Errorf("ParseState(seed file) = %+v, %v; want %+v", got, err, want)
	}
}

func TestParseStateErrors(t *testing.T) {
	for _, tt := range []struct{ name, in, want string }{
		{"no =", "Date = 2026-11-22\ngarbage\n", "line 2: not a key = value line"},
		{"no key", "= 5\n", "line 1: no key"},
		{"not a number", "# c\n\n\ntokens_within_min = lots\n", "line 4: tokens_within_min: not a number"},
		{"NaN", "requests_within_min = NaN\n", "line 1: requests_within_min: not a number"},
		{"negative level", "tokens_within_min = -1\n", "line 1: tokens_within_min: negative"},
		{"huge level", "tokens_within_min = 1e300\n", "line 1: tokens_within_min: larger than"},
		{"negative day", "tokens_within_day = -5\n", "line 1: tokens_within_day: negative"},
		{"fractional day", "tokens_within_day = 1.5\n", "line 1: tokens_within_day: not a whole number"},
		{"negative cost", "cost_within_day_usd = -1\n", "line 1: cost_within_day_usd: not a non-negative amount"},
		{"flag", "minute_token_limit_reached = 2\n", "line 1: minute_token_limit_reached: not 0 or 1"},
		{"flag yes", "day_token_limit_reached = yes\n", "line 1: day_token_limit_reached: not 0 or 1"},
		{"date", "Date = yesterday\n", "line 1: Date: not a date (YYYY-MM-DD)"},
		{"time", "x = 1\nupdated = noon\n", "line 2: updated: not an RFC 3339 time"},
		{"pause", "paused_until = 2026-11-22\n", "line 1: paused_until: not an RFC 3339 time"},
		{"twice", "Date = 2026-11-22\n\nDate = 2026-11-23\n", "line 3: Date: given twice (first on line 1)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseState([]byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseState(%q) = %v, want an error containing %q", tt.in, err, tt.want)
			}
		})
	}
}

// A file with none of gptbatch's keys is no usage file, nor a fresh one:
// emptied, or unknown keys alone.
func TestParseStateEmpty(t *testing.T) {
	for _, in := range []string{"", "\n\n", "# only a comment\n", "foo = 1\nbar = 2\n"} {
		if _, err := ParseState([]byte(in)); err == nil || !strings.Contains(err.Error(), "none of the keys gptbatch writes") {
			t.Errorf("ParseState(%q) = %v, want an error saying it has none of gptbatch's keys", in, err)
		}
	}
}

// FuzzParseState: ParseState never panics, and what it accepts Format
// writes back as a file that parses to the same Format.
func FuzzParseState(f *testing.F) {
	f.Add([]byte(State{Date: "2026-11-22", TokensWithinMin: 1.5}.Format()))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseState(b)
		if err != nil {
			return
		}
		out := s.Format()
		s2, err := ParseState(out)
		if err != nil {
			t.Fatalf("ParseState(Format(s)) = %v for\n%s", err, out)
		}
		if out2 := s2.Format(); !bytes.Equal(out, out2) {
			t.Fatalf("Format(ParseState(Format(s))) =\n%s\nwant\n%s", out2, out)
		}
		if s2.TokensWithinDay != s.TokensWithinDay || s2.CostWithinDay != s.CostWithinDay || s2.Date != s.Date ||
			math.Abs(s2.TokensWithinMin-s.TokensWithinMin) > 0.0005 || !s2.Updated.Equal(s.Updated) || !reflect.DeepEqual(s2.extra, s.extra) {
			t.Fatalf("ParseState(Format(s)) = %+v, want %+v", s2, s)
		}
	})
}
