package budget

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"testing"
	"time"
)

// The ledger is read by jq and by older gptbatch versions: appendJSON must
// write what encoding/json wrote before it, for every field, including a
// field added later (filled in here by reflection, so that forgetting it
// in appendJSON fails this test).
func TestLedgerEntryJSON(t *testing.T) {
	cost := Cost(1_234_500_000)
	neg := -Dollar / 4
	zone := time.FixedZone("", -(3*3600 + 30*60))
	entries := []LedgerEntry{
		{},
		{Time: time.Date(2026, 11, 25, 18, 0, 0, 0, time.UTC), ID: "a", Line: 1, Model: "gpt-4o-mini", Status: 200, PromptTokens: 12, CompletionTokens: 7, CostUSD: &cost, LatencyMS: 340, Attempt: 1},
		{Time: time.Date(2026, 1, 2, 3, 4, 5, 123456789, zone), ID: `he said "<hi> & bye"` + "\n\t\x01\u2028", Line: math.MaxInt32, Model: "日本語 \xff", Status: 429, CostUSD: &neg, Error: "rate_limit", Endpoint: "chat", Via: "batch", BatchID: "batch_abc"},
		{Time: time.Now(), ID: "now, with a monotonic reading", PromptTokens: math.MaxInt64, CachedTokens: -1, LatencyMS: math.MinInt64},
	}
	// Every field set: a field appendJSON does not write fails here.
	var full LedgerEntry
	v := reflect.ValueOf(&full).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(v.Type().Field(i).Name + " <&>")
		case reflect.Int, reflect.Int64:
			f.SetInt(int64(i + 1))
		case reflect.Pointer:
			f.Set(reflect.New(f.Type().Elem()))
			f.Elem().SetInt(int64(i) * 1_000_000_007)
		case reflect.Struct:
			f.Set(reflect.ValueOf(time.Date(2026, 11, 25, 18, 12, 11, 500, time.Local)))
		default:
			t.Fatalf("LedgerEntry.%s: a field of kind %s; teach this test and appendJSON", v.Type().Field(i).Name, f.Kind())
		}
	}
	entries = append(entries, full)
	for _, e := range entries {
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(e); err != nil {
			t.Fatal(err)
		}
		got, err := e.appendJSON([]byte("before\n"))
		if err != nil {
			t.Fatalf("appendJSON(%+v): %v", e, err)
		}
		if !bytes.Equal(got, append([]byte("before\n"), want.Bytes()...)) {
			t.Errorf("appendJSON wrote\n%s\nencoding/json writes\n%s", got, want.Bytes())
		}
	}
	// A time in a zone whose offset has seconds, which RFC 3339 cannot
	// write, reads back as the same instant.
	at := time.Date(2026, 11, 22, 12, 0, 0, 5, time.FixedZone("noon", -(4*60+17)))
	b, err := (&LedgerEntry{Time: at}).appendJSON(nil)
	var back LedgerEntry
	if err != nil || json.Unmarshal(b, &back) != nil || !back.Time.Equal(at) {
		t.Errorf("appendJSON of %v wrote %s (%v), which reads back as %v", at, b, err, back.Time)
	}
	// A time JSON cannot hold is an error, as it was.
	if _, err := (&LedgerEntry{Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}).appendJSON(nil); err == nil {
		t.Error("appendJSON of the year 10000: no error")
	}
}

func BenchmarkLedgerEntryJSON(b *testing.B) {
	cost := Cost(1_234_500_000)
	e := LedgerEntry{Time: time.Now(), ID: "line-123456", Line: 123456, Model: "gpt-4o-mini-2024-07-18", Status: 200, PromptTokens: 12, CompletionTokens: 70, CostUSD: &cost, Attempt: 1, Endpoint: "chat", Via: "batch", BatchID: "batch_0123456789abcdef"}
	b.Run("appendJSON", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf, _ = e.appendJSON(buf[:0])
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		for b.Loop() {
			buf.Reset()
			_ = enc.Encode(e)
		}
	})
}
