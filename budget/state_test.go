package budget

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCost(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want string
	}{{"0.0000074", "0.0000074"}, {"12.5", "12.5"}, {"$1.50", "1.5"}, {"0", "0"}, {"5", "5"}} {
		c, err := ParseCost(tt.in)
		if err != nil || c.String() != tt.want {
			t.Errorf("ParseCost(%q) = %v, %v; want %s", tt.in, c, err, tt.want)
		}
	}
	for _, bad := range []string{"-1", "abc", "1/3", ""} {
		if _, err := ParseCost(bad); err == nil {
			t.Errorf("ParseCost(%q): no error", bad)
		}
	}
	var c Cost
	if err := json.Unmarshal([]byte("0.0000075"), &c); err != nil || c != 7_500_000 {
		t.Errorf("Unmarshal(0.0000075) = %d, %v; want 7500000 picodollars", c, err)
	}
}

func TestPriceOf(t *testing.T) {
	mini, _ := PriceOf("gpt-4o-mini")
	for _, tt := range []struct {
		model string
		ok    bool
	}{{"gpt-4o-mini-2024-07-18", true}, {"gpt-4-0613", true}, {"gpt-3.5-turbo-0125", true}, {"o3-2025-04-16", true},
		{"gpt-4o-mini-search-preview", false}, {"llama3", false}, {"ft:gpt-4o-mini:acme::x", false}} {
		if _, ok := PriceOf(tt.model); ok != tt.ok {
			t.Errorf("PriceOf(%q) ok = %v, want %v", tt.model, ok, tt.ok)
		}
	}
	if p, _ := PriceOf("gpt-4o-mini-2024-07-18"); p != mini {
		t.Errorf("dated gpt-4o-mini price = %+v, want %+v", p, mini)
	}
	// 500 uncached at 0.15, 500 cached at 0.075, 100 out at 0.60 per million.
	if got, want := mini.Cost(1000, 500, 100), Cost(500*150_000+500*75_000+100*600_000); got != want {
		t.Errorf("Cost(1000, 500, 100) = %s, want %s", got, want)
	}
}

func TestStateRoundTrip(t *testing.T) {
	s := State{Date: "2026-11-22", Updated: t0, TokensWithinMin: 1234.5678, RequestsWithinMin: 3.25, TokensWithinDay: 99,
		CostWithinDay: 7_500_000, MinuteTokenLimitReached: true, PausedUntil: t0.Add(time.Second), extra: [][2]string{{"future_key", "x"}}}
	got, err := ParseState(s.Format())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Format(), s.Format()) || got.TokensWithinMin != s.TokensWithinMin {
		t.Errorf("ParseState(Format(s)) =\\n%s\\nwant\\n%s", got.Format(), s.Format())
	}
}

func TestParseStateErrors(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"Date = 2026-11-22\ngarbage\n", "line 2: not a key = value line"},
		{"tokens_within_min = lots\n", "line 1: tokens_within_min"},
		{"tokens_within_day = -5\n", "line 1: tokens_within_day"},
		{"# c\n\nminute_token_limit_reached = 2\n", "line 3: minute_token_limit_reached"},
		{"Date = 2026-11-22\nDate = 2026-11-23\n", "line 2: Date given twice"},
		{"Date = yesterday\n", "line 1: Date"},
	} {
		if _, err := ParseState([]byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseState(%q) = %v, want an error containing %q", tt.in, err, tt.want)
		}
	}
}

func TestFileStore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "usage.md")
	f, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err == nil {
		t.Error("OpenFile created usage.md before any update")
	}
	c := Cost(5)
	for i := range 3 {
		err := f.Update(context.Background(), func(s *State) ([]LedgerEntry, error) {
			s.TokensWithinDay += 10
			return []LedgerEntry{{ID: string(rune('a' + i)), CostUSD: &c}}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	st, err := f.Load(context.Background())
	if err != nil || st.TokensWithinDay != 30 {
		t.Errorf("Load = %+v, %v; want 30 tokens", st, err)
	}
	for _, p := range []string{path, path + ".lock", f.LedgerPath()} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v; want mode 0600", p, fi, err)
		}
	}
	// A torn last line (a crash mid-append) is skipped, and later appends
	// stay readable.
	lf, _ := os.OpenFile(f.LedgerPath(), os.O_APPEND|os.O_WRONLY, 0)
	lf.WriteString(`{"id":"torn","mod`)
	lf.Close()
	if err := f.Update(context.Background(), func(*State) ([]LedgerEntry, error) { return []LedgerEntry{{ID: "d"}}, nil }); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(f.LedgerPath())
	var ids []string
	skipped, err := ReadLedger(bytes.NewReader(b), func(e LedgerEntry) error { ids = append(ids, e.ID); return nil })
	if err != nil || skipped != 1 || strings.Join(ids, "") != "abcd" {
		t.Errorf("ReadLedger = %v, skipped %d, %v; want abcd, 1 skipped", ids, skipped, err)
	}
}

func TestCorruptFileUntouched(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.md")
	bad := []byte("tokens_within_min = 12\nthis is not ok\n")
	os.WriteFile(path, bad, 0o600)
	if _, err := OpenFile(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("OpenFile(corrupt) = %v, want an error naming %s", err, path)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, bad) {
		t.Errorf("corrupt usage.md changed to %q", b)
	}
}

func FuzzParseState(f *testing.F) {
	f.Add([]byte("Date = 2026-11-22\ntokens_within_min = 1.5\nrequests_within_min = 2\ntokens_within_day = 3\nminute_token_limit_reached = 0\nday_token_limit_reached = 1\n"))
	f.Add([]byte("# comment\n\ncost_within_day_usd = 0.0000075\nupdated = 2026-11-22T12:00:00Z\npaused_until =\nx = y\n"))
	f.Add([]byte("garbage"))
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
			t.Fatalf("Format is not stable:\n%s\n%s", out, out2)
		}
	})
}
