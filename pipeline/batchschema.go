package pipeline

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/batchapi"
	"github.com/gptbatch/gptbatch/internal/schema"
	"github.com/gptbatch/gptbatch/jsonl"
)

// Through --via batch (batch*.go), a line held to a schema keeps its way
// with it in its record, on disk like the rest of the line (held): which
// schema, how many follow-up batches asked it again, where its original
// request is, and what its earlier tries got and cost. The collector reads
// each answer with the same decoders, which check it (check); checkBatch
// then finishes the line's result, or, when the answer does not fit and
// --schema-retries allow another try, makes the record of its re-ask,
// which goes in a follow-up batch as the lines that failed with a 5xx do:
// reserved at submission, journalled, collected, settled and in the
// ledger like any batch line. The re-ask's record keeps the hash of the
// line's original request, so that --resume claims it by the input line
// (claims, in batchsubmit.go): the follow-up batch is collected, not
// submitted again; and the journal keeps its earlier tries with it
// (journal), so that the resumed line goes on from them.

// The schemas a --via batch line is held to (held.kind).
const (
	heldNone = iota // not held: its answer is not checked
	heldFlag        // --schema
	heldOwn         // the json_schema format of its original request's own body
)

// held is what a --via batch line's record keeps for --schema. The zero
// value is a line not held to a schema.
type held struct {
	kind   uint8
	reasks int // follow-up batches that asked it again so far
	// origAt is where the record whose body is its original request is
	// in the records spool, plus one; 0: this record is.
	origAt int64
	prior  tries // the answers of its earlier tries, paid for
	// lastAt is where the result of its last answer, which did not fit,
	// is in the records spool, plus one; 0: none. It is the line's result
	// if its re-ask fails.
	lastAt int64
}

// heldOf is how it, a line going into a batch file, is held: it is its
// original request.
func (it *item) heldOf(cfg *Config) held {
	switch {
	case it.schema == nil:
		return held{}
	case it.schema == cfg.Schema:
		return held{kind: heldFlag}
	}
	return held{kind: heldOwn}
}

// appendHeld appends h to a line record's encoding; parseHeld reads it
// back. A line not held adds one byte.
func appendHeld(b []byte, h *held) []byte {
	b = append(b, h.kind)
	if h.kind == heldNone {
		return b
	}
	u := h.prior.usage
	for _, v := range []int64{int64(h.reasks), h.origAt, int64(h.prior.n), u.PromptTokens, u.CompletionTokens, u.CachedTokens, u.ReasoningTokens, int64(h.prior.cost), h.lastAt} {
		b = binary.AppendVarint(b, v)
	}
	return b
}

// parseHeld reads what appendHeld wrote at the start of b, and returns
// the rest of b.
func parseHeld(b []byte) (held, []byte, error) {
	bad := errors.New("spool: a damaged line record")
	if len(b) == 0 {
		return held{}, nil, bad
	}
	h := held{kind: b[0]}
	b = b[1:]
	if h.kind == heldNone {
		return h, b, nil
	}
	var v [9]int64
	for i := range v {
		x, n := binary.Varint(b)
		if n <= 0 {
			return held{}, nil, bad
		}
		v[i], b = x, b[n:]
	}
	h.reasks, h.origAt, h.prior.n = int(v[0]), v[1], int(v[2])
	h.prior.usage = jsonl.Usage{PromptTokens: v[3], CompletionTokens: v[4], CachedTokens: v[5], ReasoningTokens: v[6]}
	h.prior.usage.TotalTokens = v[3] + v[4]
	h.prior.cost, h.lastAt = budget.Cost(v[7]), v[8]
	return h, b, nil
}

// heldSchema is the schema a --via batch line held as h is checked
// against; orig reads the line's original request body, needed only for a
// line held to its own.
func (r *runner) heldSchema(h held, endpoint string, orig func() ([]byte, error)) (*schema.Schema, error) {
	switch h.kind {
	case heldFlag:
		return r.cfg.Schema, nil
	case heldOwn:
		body, err := orig()
		if err != nil {
			return nil, err
		}
		own, _, err := r.cfg.schemas.cache().FromBody(endpoint, body)
		return own, err
	}
	return nil, nil
}

// batchReask is the re-ask of a --via batch line, to go in a follow-up
// batch: its record and the body it sends, and the line's result should
// the re-ask fail: its last answer, paid for (jsonl.Result's binary
// encoding, as the results spool keeps it).
type batchReask struct {
	rec  lineRecord
	body []byte
	last []byte
}

// checkBatch finishes res, the result a decoder made of ans, the answer a
// batch gave to it, a line held to a schema as h with the record rec; its
// original request is the record at origOff, whose body orig reads. While
// the answer does not fit and --schema-retries allow, it returns the
// re-ask to submit instead, and res is not the line's. Otherwise res
// becomes the line's result: the sums of its tries' usage and cost, and,
// when no answer fit, an invalid_output that says in how many tries, or
// why it was not asked again. It may run on any goroutine.
func (r *runner) checkBatch(it *item, rec lineRecord, h held, origOff int64, orig func() ([]byte, error), ans answer, res *jsonl.Result) *batchReask {
	sum := h.prior
	sum.addAnswer(ans.usage, ans.cost, 0)
	var why string
	if ans.invalid != nil && h.reasks < r.cfg.SchemaRetries {
		next, err := r.batchReask(it, rec, h, origOff, orig, ans)
		if err == nil {
			last := *res
			sum.set(&last, it.priced)
			next.last, _ = last.AppendBinary(nil) // it never fails
			return next
		}
		why = "not asked again: " + err.Error()
	}
	sum.set(res, it.priced)
	if ans.invalid != nil && res.Error != nil && res.Error.Type == jsonl.ErrInvalidOutput {
		msg := ans.invalid.verdict.Message
		switch {
		case why != "":
			res.Error.Message = fmt.Sprintf("line %d: %s (%s)", rec.Line, msg, why)
		case sum.n > 1:
			res.Error.Message = fmt.Sprintf("line %d: no answer fit the schema in %d tries; the last: %s", rec.Line, sum.n, msg)
		}
	}
	return nil
}

// batchReask is the re-ask of ans, an answer to the line of record rec,
// held as h (its original request at origOff), that does not fit its
// schema: its request built as a synchronous re-ask's is (item.reask),
// estimated and counted as prepare would, at batch prices. A re-ask whose
// estimate alone the day's limits could never admit is not made.
func (r *runner) batchReask(it *item, rec lineRecord, h held, origOff int64, orig func() ([]byte, error), ans answer) (*batchReask, error) {
	body, err := orig()
	if err != nil {
		return nil, err
	}
	first := *it
	first.body = body
	last := &item{attempts: it.attempts, answered: ans}
	next, err := first.reask(&r.cfg, last)
	if err != nil {
		return nil, err
	}
	if err := dayCheck(r.cfg.Gate.Limits(), next.est); err != nil {
		return nil, err
	}
	nh := held{kind: h.kind, reasks: h.reasks + 1, origAt: origOff + 1, prior: h.prior}
	nh.prior.addAnswer(ans.usage, ans.cost, 0)
	nrec := rec
	nrec.Prompt, nrec.EstTokens, nrec.EstCost, nrec.Priced, nrec.Held = next.prompt, next.est.Tokens, next.est.Cost, next.priced, nh
	// Hash is the original request's: --resume claims the re-ask by the
	// input line it answers.
	nrec.Hash = batchapi.LineHash(rec.URL, body)
	return &batchReask{rec: nrec, body: next.body}, nil
}

// lastAnswer is, for the line of record rec whose re-ask failed (why),
// the result of its last answer, which did not fit and was paid for:
// invalid_output, its message saying why it was not asked again, and
// attempts every batch the line was in. Nil when it has none (a first
// try, a line resumed from a follow-up), or when typ, the failure's type,
// is one --resume mends (interrupted, network): then the line's result is
// the failure.
func lastAnswer(records *spool, rec lineRecord, attempts int, typ, why string) *jsonl.Result {
	if rec.Held.lastAt == 0 || typ == jsonl.ErrInterrupted || typ == jsonl.ErrNetwork {
		return nil
	}
	head, _, err := records.read(rec.Held.lastAt-1, false)
	if err != nil {
		return nil
	}
	res := new(jsonl.Result)
	if err := res.UnmarshalBinary(head); err != nil || res.Error == nil {
		return nil
	}
	res.Error.Message += " (" + why + ")"
	res.Attempts = attempts
	return res
}

// countBatch adds an answer to a --via batch line held as h to the run's
// schema figures: a line's first answer is checked; reask says it goes
// again; settled says its cost is counted in this run (an answer read
// again from a batch collected before was counted by the run that was).
func (r *runner) countBatch(h held, reask, settled bool, cost budget.Cost) {
	if h.kind == heldNone {
		return
	}
	if h.reasks == 0 {
		r.stats.Checked.Add(1)
		if reask {
			r.stats.Reasked.Add(1)
		}
	}
	if reask {
		r.stats.Reasks.Add(1)
	}
	if h.reasks > 0 && settled {
		r.stats.ReaskCost.Add(int64(cost))
	}
}

// journalTries is what the batch journal keeps of a line's earlier tries
// (JournalItem.Tries) when it goes in a batch after others: a follow-up
// of lines that failed (a 5xx, a 429, expired, missing) or of --schema
// re-asks. --resume, collecting that batch, goes on from them: the
// line's attempts count every batch it was in, its result sums every
// answer, and its follow-ups stay within --retries and --schema-retries.
// The follow-up line's custom_id carries it too (batchapi.CustomID), for
// a lost journal.
type journalTries = batchapi.Tries

// journal is what the journal keeps of h, the hold of a line that goes in
// a batch after being in batches others: nil for a line's first try.
func (h held) journal(batches int) *journalTries {
	if batches == 0 {
		return nil
	}
	u := h.prior.usage
	return &journalTries{Reasks: h.reasks, Batches: batches, Answers: h.prior.n,
		PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, CachedTokens: u.CachedTokens,
		ReasoningTokens: u.ReasoningTokens, Cost: int64(h.prior.cost)}
}

// resume makes h, a line's as --resume reads it again, go on from the
// tries the journal kept of it (journal), and returns how many batches it
// was in before. A line none were kept of is as it was; a line not held
// takes only its batches.
func (h *held) resume(raw json.RawMessage) int {
	var jt journalTries
	if len(raw) == 0 || json.Unmarshal(raw, &jt) != nil {
		return 0
	}
	if h.kind == heldNone {
		return jt.Batches
	}
	h.reasks, h.prior.n = jt.Reasks, jt.Answers
	h.prior.usage = jsonl.Usage{PromptTokens: jt.PromptTokens, CompletionTokens: jt.CompletionTokens,
		TotalTokens: jt.PromptTokens + jt.CompletionTokens, CachedTokens: jt.CachedTokens, ReasoningTokens: jt.ReasoningTokens}
	h.prior.cost = budget.Cost(jt.Cost)
	return jt.Batches
}
