package jsonl

import (
	"encoding/binary"
	"encoding/json"
	"errors"
)

// Field tags of Result's binary encoding.
const (
	resID byte = iota + 1
	resLine
	resModel
	resContent
	resFinish
	resToolCalls
	resUsage
	resCost
	resAttempts
	resLatency
	resBatchID
	resMetadata
	resError
	resExtra       // the rarer answer fields, as JSON: see extraFields
	resParsed      // --schema's parsed value: every line's, when it is given
	resCached      // no value: the tag alone says true
	resUnknownCost // no value: cost_usd null (resCost is a known one's picodollars)
)

// extraFields are the fields of a result that few answers have (n > 1,
// logprobs, a refusal, embeddings): the binary encoding keeps them as one
// JSON value rather than a tag each.
type extraFields struct {
	Refusal    *string         `json:"refusal,omitempty"`
	Choices    []*string       `json:"choices,omitempty"`
	Logprobs   json.RawMessage `json:"logprobs,omitempty"`
	Embedding  json.RawMessage `json:"embedding,omitempty"`
	Embeddings json.RawMessage `json:"embeddings,omitempty"`
}

// AppendBinary appends r's binary encoding, which UnmarshalBinary reads:
// the fields that are set, each a tag and its value. It is how --via
// batch keeps results on disk until their turn to be written: reading
// one back takes a fifth of JSON's time, and the ordered writer reads
// every one. It never fails.
func (r *Result) AppendBinary(b []byte) ([]byte, error) {
	str := func(tag byte, s string) {
		if s != "" {
			b = append(b, tag)
			b = binary.AppendUvarint(b, uint64(len(s)))
			b = append(b, s...)
		}
	}
	num := func(tag byte, n int64) {
		if n != 0 {
			b = append(b, tag)
			b = binary.AppendVarint(b, n)
		}
	}
	str(resID, r.ID)
	num(resLine, int64(r.Line))
	str(resModel, r.Model)
	if r.Content != nil {
		b = append(b, resContent)
		b = binary.AppendUvarint(b, uint64(len(r.Content)))
		b = append(b, r.Content...)
	}
	str(resParsed, string(r.Parsed))
	if x := (extraFields{r.Refusal, r.Choices, r.Logprobs, r.Embedding, r.Embeddings}); x.Refusal != nil || x.Choices != nil || x.Logprobs != nil || x.Embedding != nil || x.Embeddings != nil {
		j, _ := json.Marshal(x) // raw JSON and strings always marshal
		str(resExtra, string(j))
	}
	str(resFinish, r.FinishReason)
	str(resToolCalls, string(r.ToolCalls))
	if u := r.Usage; u != nil {
		b = append(b, resUsage)
		for _, n := range []int64{u.PromptTokens, u.CompletionTokens, u.TotalTokens, u.CachedTokens, u.ReasoningTokens} {
			b = binary.AppendVarint(b, n)
		}
		var flags byte
		if u.InputOnly {
			flags |= 1
		}
		b = append(b, flags)
	}
	switch c := r.CostUSD; c.state {
	case knownCost:
		b = append(b, resCost)
		b = binary.AppendVarint(b, c.pico)
	case unknownCost:
		b = append(b, resUnknownCost)
	}
	if r.Cached {
		b = append(b, resCached)
	}
	num(resAttempts, int64(r.Attempts))
	num(resLatency, r.LatencyMS)
	str(resBatchID, r.BatchID)
	str(resMetadata, string(r.Metadata))
	if e := r.Error; e != nil {
		b = append(b, resError)
		b = binary.AppendUvarint(b, uint64(len(e.Type)))
		b = append(b, e.Type...)
		b = binary.AppendUvarint(b, uint64(len(e.Message)))
		b = append(b, e.Message...)
		b = binary.AppendVarint(b, int64(e.Status))
	}
	return b, nil
}

// errDamagedResult is UnmarshalBinary's error: made once, as it runs for
// every result the ordered writer reads.
var errDamagedResult = errors.New("a damaged result record")

// UnmarshalBinary sets r, a zero Result, to what AppendBinary encoded in
// b. r keeps none of b.
func (r *Result) UnmarshalBinary(b []byte) error {
	str := func() (string, bool) {
		l, n := binary.Uvarint(b)
		if n <= 0 || uint64(len(b)-n) < l {
			return "", false
		}
		s := string(b[n : n+int(l)])
		b = b[n+int(l):]
		return s, true
	}
	num := func() (int64, bool) {
		v, n := binary.Varint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	integer := func() (int, bool) {
		v, ok := num()
		return int(v), ok
	}
	raw := func() (json.RawMessage, bool) {
		s, ok := str()
		return json.RawMessage(s), ok
	}
	for len(b) > 0 {
		tag := b[0]
		b = b[1:]
		ok := true
		switch tag {
		case resID:
			r.ID, ok = str()
		case resLine:
			r.Line, ok = integer()
		case resModel:
			r.Model, ok = str()
		case resContent:
			r.Content, ok = raw()
		case resParsed:
			r.Parsed, ok = raw()
		case resExtra:
			var x extraFields
			var s string
			if s, ok = str(); ok {
				ok = json.Unmarshal([]byte(s), &x) == nil
				r.Refusal, r.Choices, r.Logprobs, r.Embedding, r.Embeddings = x.Refusal, x.Choices, x.Logprobs, x.Embedding, x.Embeddings
			}
		case resFinish:
			r.FinishReason, ok = str()
		case resToolCalls:
			r.ToolCalls, ok = raw()
		case resUsage:
			var u [5]int64
			for i := range u {
				if u[i], ok = num(); !ok {
					break
				}
			}
			if ok = ok && len(b) > 0; ok {
				r.Usage = &Usage{PromptTokens: u[0], CompletionTokens: u[1], TotalTokens: u[2], CachedTokens: u[3], ReasoningTokens: u[4], InputOnly: b[0]&1 != 0}
				b = b[1:]
			}
		case resCost:
			var pico int64
			pico, ok = num()
			r.CostUSD = CostOf(pico)
		case resUnknownCost:
			r.CostUSD = UnknownCost()
		case resCached:
			r.Cached = true
		case resAttempts:
			r.Attempts, ok = integer()
		case resLatency:
			r.LatencyMS, ok = num()
		case resBatchID:
			r.BatchID, ok = str()
		case resMetadata:
			r.Metadata, ok = raw()
		case resError:
			e := new(Error)
			if e.Type, ok = str(); ok {
				if e.Message, ok = str(); ok {
					e.Status, ok = integer()
				}
			}
			r.Error = e
		default:
			ok = false
		}
		if !ok {
			return errDamagedResult
		}
	}
	return nil
}
