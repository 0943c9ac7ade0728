package batchapi

// A line of a batch input file is named twice: by its content hash, which
// the journal's items record, so that --resume knows an input line it sent
// before, and by its custom_id, which the output file names it by.

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// InputLine is a line of a batch input file: a request, POST to url with
// the exact body, named by customID, gptbatch's own (CustomID). A lost
// journal's rebuild reads such lines back (recover.go).
func InputLine(customID, url string, body []byte) []byte {
	b := make([]byte, 0, len(body)+len(customID)+64)
	b = append(b, inputHead...)
	b = strconv.AppendQuote(b, customID)
	b = append(b, inputURL...)
	b = strconv.AppendQuote(b, url)
	b = append(b, inputBody...)
	b = append(b, body...)
	return append(b, inputEnd...)
}

// InputLineLen is len(InputLine(customID, url, body)), without writing the
// line: a dry run's plan sizes every line's batch file by it, and need not
// copy its body to do so.
func InputLineLen(customID, url string, body []byte) int {
	var q [64]byte // room for most quoted ids and urls, so that quoting them allocates nothing
	return len(inputHead) + len(strconv.AppendQuote(q[:0], customID)) + len(inputURL) +
		len(strconv.AppendQuote(q[:0], url)) + len(inputBody) + len(body) + len(inputEnd)
}

// The parts of an input line around its custom_id, url and body, which
// InputLine writes and InputLineLen counts.
const (
	inputHead = `{"custom_id":`
	inputURL  = `,"method":"POST","url":`
	inputBody = `,"body":`
	inputEnd  = "}\n"
)

// FirstLine is the line of a batch input file that asks input line line's
// request, POST to url with body, for the first time, and the request's
// LineHash: the output file names the line by its custom_id, its LineID,
// and the journal records it by both (JournalItem). Made together, the
// line is hashed once.
func FirstLine(line int, url string, body []byte) (text []byte, hash string) {
	return InputLine(LineID(line), url, body), LineHash(url, body)
}

// LineHashLen is the length of every LineHash.
const LineHashLen = 16

// LineHash is the content hash of a request as the journal records it
// (JournalItem): its URL and its exact body, in LineHashLen characters.
func LineHash(url string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(url))
	h.Write([]byte{0})
	h.Write(body)
	// 96 bits: no two lines of a journal collide by chance.
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:12])
}

// A line's custom_id in a batch input file is gptbatch's own, unique
// whatever the input's ids are: CustomID writes it, LineOf reads its line
// back for collecting, and parseCustomID reads all of it back for a lost
// journal's rebuild (recover.go).

// Tries is what the journal keeps of a line's earlier tries
// (JournalItem.Tries, as JSON): the pipeline writes it and reads it back,
// and a follow-up line's custom_id carries it (CustomID).
type Tries struct {
	Reasks           int   `json:"reasks"`
	Batches          int   `json:"batches"` // the batches the line was in before this one
	Answers          int   `json:"answers"`
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	CachedTokens     int64 `json:"cached_tokens,omitempty"`
	ReasoningTokens  int64 `json:"reasoning_tokens,omitempty"`
	Cost             int64 `json:"cost_picodollars"`
}

// JSON is t as the journal keeps it (JournalItem.Tries); nil for nil, a
// first try.
func (t *Tries) JSON() json.RawMessage {
	if t == nil {
		return nil
	}
	b, _ := json.Marshal(t) // it never fails
	return b
}

// fields are t's numbers in the order CustomID writes them.
func (t *Tries) fields() [8]int64 {
	return [8]int64{int64(t.Reasks), int64(t.Batches), int64(t.Answers), t.PromptTokens, t.CompletionTokens, t.CachedTokens, t.ReasoningTokens, t.Cost}
}

// LineID names input line line, line-17: the journal's items record it
// (JournalItem.CustomID), and every custom_id of the line begins with it.
func LineID(line int) string { return "line-" + strconv.Itoa(line) }

// CustomID is the custom_id of input line line in a batch file: its
// LineID, line-17. A line that goes again after earlier batches (tries;
// nil for a first try) may send another body than the input
// line's (a --schema re-ask), whose hash a lost journal could not compute
// again: its custom_id also carries hash, the LineHash of its original
// request, and its tries, so that the journal is rebuilt as it was (rebuild):
// line-17.<hash>.<reasks>.<batches>.<answers>.<prompt>.<completion>.<cached>.<reasoning>.<picodollars>,
// about 60 characters. Collecting reads back only its line (LineOf).
func CustomID(line int, hash string, t *Tries) string {
	id := LineID(line)
	if t == nil || len(hash) != LineHashLen {
		return id
	}
	b := append([]byte(id), '.')
	b = append(b, hash...)
	for _, v := range t.fields() {
		b = append(b, '.')
		b = strconv.AppendInt(b, v, 10)
	}
	return string(b)
}

// LineOf reads the line a custom_id of gptbatch's (CustomID) names: id,
// its LineID, line-17, which the journal's items record, and line, the
// input line, 17. ok is false for a custom_id CustomID does not write, a
// foreign or mangled one (q7, line-017, line-17.x): it names no line of
// gptbatch's, and id is the whole custom_id. It allocates nothing for a
// custom_id of gptbatch's: collecting calls it for every line of an
// output file.
func LineOf(customID string) (id string, line int, ok bool) {
	id, rest, carries := strings.Cut(customID, ".")
	n, ok := strings.CutPrefix(id, "line-")
	if ok {
		var v int64
		v, ok = number(n)
		line = int(v)
		ok = ok && line > 0
	}
	if !ok || carries && !isCarry(rest) {
		return customID, 0, false
	}
	return id, line, true
}

// isCarry reports whether rest, what follows the first dot of a custom_id,
// is what CustomID writes there: a LineHash and the eight numbers of its
// tries.
func isCarry(rest string) bool {
	_, _, ok := parseCarry(rest)
	return ok
}

// parseCarry reads what CustomID writes after a line's id and its dot: the
// LineHash of its original request and its tries' numbers (Tries.fields).
func parseCarry(rest string) (hash string, v [8]int64, ok bool) {
	hash, rest, _ = strings.Cut(rest, ".")
	if len(hash) != LineHashLen || strings.IndexFunc(hash, notHashRune) >= 0 {
		return "", v, false
	}
	for i := range v {
		var f string
		var more bool
		f, rest, more = strings.Cut(rest, ".")
		if v[i], ok = number(f); !ok || more != (i < len(v)-1) {
			return "", v, false
		}
	}
	return hash, v, true
}

// notHashRune reports whether r is not of LineHash's alphabet
// (base64.RawURLEncoding).
func notHashRune(r rune) bool {
	return !('A' <= r && r <= 'Z' || 'a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '-' || r == '_')
}

// number reads s as CustomID writes a number (strconv.AppendInt); ok is
// false for any other spelling of one (01, +1, 1_000).
func number(s string) (int64, bool) {
	v, err := strconv.ParseInt(s, 10, 64)
	var b [20]byte // the longest int64, -9223372036854775808
	return v, err == nil && string(strconv.AppendInt(b[:0], v, 10)) == s
}

// parseCustomID reads what CustomID wrote: the line's id (LineOf), and,
// for a line that went again, the hash of its original request and its
// tries; for a first try, hash is "" and tries nil.
func parseCustomID(customID string) (id, hash string, tries json.RawMessage, err error) {
	id, rest, carries := strings.Cut(customID, ".")
	if !carries {
		return id, "", nil, nil
	}
	hash, v, ok := parseCarry(rest)
	if !ok {
		return "", "", nil, fmt.Errorf("custom_id %q: not gptbatch's", customID)
	}
	t := &Tries{Reasks: int(v[0]), Batches: int(v[1]), Answers: int(v[2]), PromptTokens: v[3], CompletionTokens: v[4], CachedTokens: v[5], ReasoningTokens: v[6], Cost: v[7]}
	return id, hash, t.JSON(), nil
}
