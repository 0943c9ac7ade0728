package budget

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/gptbatch/gptbatch/internal/jsonenc"
)

// LedgerEntry is one JSON line of the ledger: an API call, or cache hits.
type LedgerEntry struct {
	Time             time.Time `json:"time"`
	ID               string    `json:"id"`
	Line             int       `json:"line"`
	Model            string    `json:"model"`
	Status           int       `json:"status"` // HTTP status; 0 = no response
	PromptTokens     int64     `json:"prompt_tokens"`
	CompletionTokens int64     `json:"completion_tokens"`
	CachedTokens     int64     `json:"cached_tokens"`
	CostUSD          *Cost     `json:"cost_usd"` // null when the price is unknown
	LatencyMS        int64     `json:"latency_ms"`
	Attempt          int       `json:"attempt"`
	Error            string    `json:"error,omitempty"`    // the error type when the call failed
	Endpoint         string    `json:"endpoint,omitempty"` // "chat" (or empty, older entries), "embeddings" or "responses"
	Via              string    `json:"via,omitempty"`      // "batch" for a Batch API line; empty for a synchronous call
	BatchID          string    `json:"batch_id,omitempty"` // the Batch API batch the line went in
	// CacheHits, when not 0, are a run's lines of Model answered without a
	// call; SavedUSD is what their answers cost when paid for. Reports
	// count them apart from the calls, never as spend.
	CacheHits int64 `json:"cache_hits,omitempty"`
	SavedUSD  *Cost `json:"saved_usd,omitempty"`
}

// appendJSON appends e as json.Encoder writes it, without reflection: a
// collected batch writes a line a result, and encoding/json took most of
// that time.
func (e *LedgerEntry) appendJSON(b []byte) ([]byte, error) {
	if y := e.Time.Year(); y < 0 || y > 9999 {
		line, err := json.Marshal(e) // says why
		return append(append(b, line...), '\n'), err
	}
	str := func(key, v string) {
		b = append(b, key...)
		b = jsonenc.AppendString(b, v, true)
	}
	num := func(key string, v int64) {
		b = append(b, key...)
		b = strconv.AppendInt(b, v, 10)
	}
	b = append(b, `{"time":"`...)
	b = appendTime(b, e.Time)
	b = append(b, '"')
	str(`,"id":`, e.ID)
	num(`,"line":`, int64(e.Line))
	str(`,"model":`, e.Model)
	num(`,"status":`, int64(e.Status))
	num(`,"prompt_tokens":`, e.PromptTokens)
	num(`,"completion_tokens":`, e.CompletionTokens)
	num(`,"cached_tokens":`, e.CachedTokens)
	b = append(b, `,"cost_usd":`...)
	if e.CostUSD == nil {
		b = append(b, "null"...)
	} else {
		b = e.CostUSD.AppendJSON(b)
	}
	num(`,"latency_ms":`, e.LatencyMS)
	num(`,"attempt":`, int64(e.Attempt))
	for _, f := range [...]struct{ key, v string }{
		{`,"error":`, e.Error}, {`,"endpoint":`, e.Endpoint}, {`,"via":`, e.Via}, {`,"batch_id":`, e.BatchID},
	} {
		if f.v != "" {
			str(f.key, f.v)
		}
	}
	if e.CacheHits != 0 {
		num(`,"cache_hits":`, e.CacheHits)
	}
	if e.SavedUSD != nil {
		b = append(b, `,"saved_usd":`...)
		b = e.SavedUSD.AppendJSON(b)
	}
	return append(b, '}', '\n'), nil
}

// ReadLedger calls fn for each entry of a ledger until fn fails. Blank
// lines and a torn final line are skipped; any other line that does not
// parse is an error naming it.
func ReadLedger(r io.Reader, fn func(LedgerEntry) error) error {
	_, err := readLedger(r, fn, false, nil)
	return err
}

// readLedger is ReadLedger, or, lenient, it skips and counts every line
// that does not parse. With want, only the lines it keeps are decoded.
func readLedger(r io.Reader, fn func(LedgerEntry) error, lenient bool, want func(line []byte) bool) (skipped int, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if err != nil && err != io.EOF {
			return skipped, fmt.Errorf("line %d: %w", n, err)
		}
		final := err == io.EOF
		if len(bytes.TrimSpace(line)) > 0 && (want == nil || want(line)) {
			var e LedgerEntry
			if jerr := json.Unmarshal(line, &e); jerr != nil {
				if !final && !lenient {
					return skipped, fmt.Errorf("line %d: not a ledger entry: %w", n, jerr)
				}
				skipped++
			} else if err := fn(e); err != nil {
				return skipped, err
			}
		}
		if final {
			return skipped, nil
		}
	}
}
