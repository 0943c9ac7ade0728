package schema

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/gptbatch/gptbatch/internal/jsonenc"
	"github.com/gptbatch/gptbatch/jsonl"
)

// The user messages of a re-ask. They name the problem and ask for the
// answer alone: the model reads them after its own invalid answer.
const (
	reaskInvalid   = "That answer is not valid: %s. Reply again with only the corrected JSON value, one that fits the schema."
	reaskTruncated = "Your previous answer was cut off at the output token limit before it was complete. Reply again, more briefly, with one complete JSON value that fits the schema."
)

// Reask is the request body that asks an invalid answer again, built from
// the line's original body (chat or responses) each time, not from the
// previous re-ask, so tries do not pile up in the conversation:
//
//   - NotJSON, Mismatch: the way instructor asks again: the conversation,
//     then the invalid answer as an assistant message, then a user message
//     with the validator's message asking for the corrected JSON. The model
//     sees what it said and what was wrong, which corrects a near miss more
//     often than a fresh sample does;
//   - Truncated: the conversation and a user message asking for a shorter
//     complete answer, without the cut-off text: it is as long as the
//     output cap, and would cost that many input tokens to say nothing;
//   - Refused: the body as it was: arguing with a refusal is not this
//     tool's business, another sample may answer.
//
// What a re-ask costs, beyond the answer it gets: the whole original
// prompt again, plus for NotJSON and Mismatch the invalid answer (its
// completion tokens, now billed as input) and about 30 tokens of message
// and per-message overhead plus the validator's message (10 to 60 tokens);
// for Truncated about 40 tokens. Every other field of the body (model,
// max_tokens, the format, ...) is sent as it was.
func Reask(endpoint string, body []byte, answer string, v Verdict) ([]byte, error) {
	var add [][]byte
	switch v.Kind {
	case Refused:
		return body, nil
	case NotJSON, Mismatch:
		add = [][]byte{chatMessage("assistant", answer), chatMessage("user", fmt.Sprintf(reaskInvalid, v.Message))}
	case Truncated:
		add = [][]byte{chatMessage("user", reaskTruncated)}
	default:
		return nil, fmt.Errorf("a %s answer is not asked again", v.Kind)
	}
	top, err := objectMembers(body)
	if err != nil {
		return nil, err
	}
	switch endpoint {
	case jsonl.EndpointChat:
		msgs := top.get("messages")
		if msgs == nil {
			return nil, errors.New("a chat body without messages")
		}
		out, err := appendItems(msgs, add)
		if err != nil {
			return nil, fmt.Errorf("messages: %w", err)
		}
		return top.with("messages", out).encode(), nil
	case jsonl.EndpointResponses:
		in := bytes.TrimSpace(top.get("input"))
		switch {
		case len(in) == 0 || bytes.Equal(in, []byte("null")):
			in = []byte("[]")
		case in[0] == '"':
			// A string input is one user message; as a list it can be followed.
			in = append(append([]byte(`[{"role":"user","content":`), in...), "}]"...)
		}
		out, err := appendItems(in, add)
		if err != nil {
			return nil, fmt.Errorf("input: %w", err)
		}
		return top.with("input", out).encode(), nil
	}
	return nil, fmt.Errorf("%s: %w", endpoint, ErrNoSchemaField)
}

// chatMessage is a chat message, {"role":...,"content":...}; the Responses API
// takes the same as an input item.
func chatMessage(role, content string) []byte {
	b := []byte(`{"role":"`)
	b = append(b, role...)
	b = append(b, `","content":`...)
	b = jsonenc.AppendString(b, content, false)
	return append(b, '}')
}

// appendItems appends items to arr, a JSON array, keeping its bytes.
func appendItems(arr []byte, items [][]byte) ([]byte, error) {
	a := bytes.TrimSpace(arr)
	if len(a) < 2 || a[0] != '[' || a[len(a)-1] != ']' {
		return nil, errors.New("not a JSON array")
	}
	out := make([]byte, 0, len(a)+64*len(items))
	out = append(out, a[:len(a)-1]...)
	empty := len(bytes.TrimSpace(a[1:len(a)-1])) == 0
	for i, it := range items {
		if i > 0 || !empty {
			out = append(out, ',')
		}
		out = append(out, it...)
	}
	return append(out, ']'), nil
}
