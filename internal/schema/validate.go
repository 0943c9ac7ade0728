package schema

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// printer writes the validator's messages in English; it is read, never
// written, so all goroutines share it.
var printer = message.NewPrinter(language.English)

// Kind is what an answer is, for a line held to a schema.
type Kind int

// Kinds of answer. Valid is the only one with a parsed value; ToolCalls is
// no structured answer at all (the model called a tool), to be written as
// it is; the rest are invalid and asked again.
const (
	Valid     Kind = iota // JSON that fits the schema
	NotJSON               // not one JSON value
	Mismatch              // JSON that fails the schema
	Truncated             // cut off at the output cap (finish_reason "length")
	Refused               // a refusal, or stopped by the content filter
	ToolCalls             // finish_reason "tool_calls": not an answer to check
)

// String is the kind as a word, for logs and tests.
func (k Kind) String() string {
	switch k {
	case Valid:
		return "valid"
	case NotJSON:
		return "not_json"
	case Mismatch:
		return "mismatch"
	case Truncated:
		return "truncated"
	case Refused:
		return "refused"
	case ToolCalls:
		return "tool_calls"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// InvalidError is an answer that is not valid: its Kind (NotJSON or
// Mismatch from Validate) and the validator's message, short and meant to
// be read by a model in a re-ask: "at /age: got string, want integer".
type InvalidError struct {
	Kind    Kind
	Message string
}

// Error is the validator's message.
func (e *InvalidError) Error() string { return e.Message }

// maxCauses is how many of the validator's complaints a message names: the
// model needs the first few to correct an answer, and a re-ask pays for
// every word.
const maxCauses = 5

// Validate parses content, an answer, and checks it against the schema. A
// valid answer gives its JSON value, compact (insignificant blanks removed,
// nothing else changed); an invalid one an *InvalidError: NotJSON when
// content is not exactly one JSON value (blanks around it aside), Mismatch
// when the value fails the schema.
func (s *Schema) Validate(content string) (json.RawMessage, error) {
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(content))
	if err != nil {
		return nil, &InvalidError{Kind: NotJSON, Message: "not JSON: " + jsonProblem(content, err)}
	}
	if err := s.compiled.Validate(v); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return nil, &InvalidError{Kind: Mismatch, Message: describe(ve)}
		}
		return nil, &InvalidError{Kind: Mismatch, Message: err.Error()}
	}
	return compactValid(content), nil
}

// compactValid is content without its insignificant blanks, as
// json.Compact writes it. content must be valid JSON, as the decoder found
// it: then a blank outside a string is the only thing to drop, and a
// string ends at the first quote that no backslash escapes. This is a fifth
// of json.Compact's time, which re-checks the grammar the decoder checked.
func compactValid(content string) json.RawMessage {
	b := make([]byte, 0, len(content))
	inString, escaped := false, false
	for i := 0; i < len(content); i++ {
		c := content[i]
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			continue
		case c == '"':
			inString = true
		}
		b = append(b, c)
	}
	return b
}

// jsonProblem says why content is not JSON, with where.
func jsonProblem(content string, err error) string {
	if strings.TrimSpace(content) == "" {
		return "the answer is empty"
	}
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("%v at byte %d", se, se.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "it ends before the JSON value does"
	}
	return err.Error()
}

// describe flattens a validation error into its causes at the leaves,
// "at /age: got string, want integer; at top level: missing property
// 'name'", at most maxCauses of them. The causes of a failed anyOf that
// all say the type is wrong at one place become one: "at /x: got number,
// want string or null".
func describe(ve *jsonschema.ValidationError) string {
	var causes []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if msg, ok := mergedTypes(e); ok {
			causes = append(causes, at(e.InstanceLocation)+msg)
			return
		}
		if len(e.Causes) == 0 {
			// The validator lists names in map order; sorted, the same
			// answer gets the same message (and the same re-ask) every time.
			switch k := e.ErrorKind.(type) {
			case *kind.Required:
				slices.Sort(k.Missing)
			case *kind.AdditionalProperties:
				slices.Sort(k.Properties)
			case *kind.DependentRequired:
				slices.Sort(k.Missing)
			case *kind.Dependency:
				slices.Sort(k.Missing)
			}
			causes = append(causes, at(e.InstanceLocation)+e.ErrorKind.LocalizedString(printer))
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	slices.Sort(causes) // the validator visits properties in map order
	causes = dedupe(causes)
	if len(causes) > maxCauses {
		more := len(causes) - maxCauses
		causes = append(causes[:maxCauses], fmt.Sprintf("and %d more", more))
	}
	return strings.Join(causes, "; ")
}

// mergedTypes is the one message of an anyOf or oneOf whose branches all
// failed at its own place with nothing below them: "got number, want
// string or null" when each failed for its type, else the other
// complaints joined, with the types the rest wanted: "value must be one of
// 'a', 'b', or be null".
func mergedTypes(e *jsonschema.ValidationError) (string, bool) {
	switch e.ErrorKind.(type) {
	case *kind.AnyOf, *kind.OneOf:
	default:
		return "", false
	}
	if len(e.Causes) == 0 {
		return "", false
	}
	var got string
	var want, others []string
	for _, c := range e.Causes {
		for _, ok := c.ErrorKind.(*kind.Reference); ok && len(c.Causes) == 1; _, ok = c.ErrorKind.(*kind.Reference) {
			c = c.Causes[0] // a $ref followed: the complaint is below it
		}
		if len(c.Causes) > 0 || jsonPointer(c.InstanceLocation) != jsonPointer(e.InstanceLocation) {
			return "", false
		}
		if t, ok := c.ErrorKind.(*kind.Type); ok {
			got = t.Got
			want = append(want, t.Want...)
			continue
		}
		others = append(others, c.ErrorKind.LocalizedString(printer))
	}
	want = dedupe(want)
	switch {
	case len(others) == 0:
		return fmt.Sprintf("got %s, want %s", got, strings.Join(want, " or ")), true
	case len(want) == 0:
		return strings.Join(others, " or "), true
	}
	return fmt.Sprintf("%s, or be %s", strings.Join(others, " or "), strings.Join(want, " or ")), true
}

// at names a place in the answer for a message.
func at(loc []string) string {
	if len(loc) == 0 {
		return "at top level: "
	}
	return "at " + jsonPointer(loc) + ": "
}

// jsonPointer writes a location as a JSON pointer, /items/0/name.
func jsonPointer(loc []string) string {
	var b strings.Builder
	for _, tok := range loc {
		b.WriteByte('/')
		b.WriteString(escapePointer(tok))
	}
	return b.String()
}

// dedupe drops repeats, keeping the first of each in order.
func dedupe(s []string) []string {
	out := s[:0]
	seen := map[string]bool{}
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// Verdict is an answer judged: its Kind, its parsed value when Valid, and
// when invalid the message for the result's invalid_output error and for
// the re-ask.
type Verdict struct {
	Kind    Kind
	Parsed  json.RawMessage // the answer's JSON value, compact; Valid only
	Message string          // what was wrong; "" when Valid or ToolCalls
}

// Retry reports whether the answer is invalid and is asked again while
// tries remain.
func (v Verdict) Retry() bool {
	switch v.Kind {
	case NotJSON, Mismatch, Truncated, Refused:
		return true
	}
	return false
}

// maxRefusal is how much of a refusal an invalid_output message quotes; the
// result keeps the whole of it in its refusal field.
const maxRefusal = 200

// Classify judges an answer held to the schema, from what the decoder read
// of it: its text content ("" when null), its finish_reason (chat's, or
// the one the decoder makes of a responses answer's status: "length" for
// max_output_tokens) and its refusal ("" when none). The rules, in order:
//
//  1. finish_reason "length": Truncated, even when the text happens to
//     parse and fit, since a cut-off answer is never the model's whole one;
//  2. a refusal: Refused; finish_reason "content_filter": Refused;
//  3. finish_reason "tool_calls" (or the older "function_call"): ToolCalls,
//     as the model called a tool instead of answering;
//  4. otherwise Validate decides: Valid, NotJSON or Mismatch.
func (s *Schema) Classify(content, finishReason, refusal string) Verdict {
	switch {
	case finishReason == "length":
		return Verdict{Kind: Truncated, Message: "cut off at the output token limit (finish_reason length)"}
	case refusal != "":
		r := refusal
		if len(r) > maxRefusal {
			r = strings.ToValidUTF8(r[:maxRefusal], "") + "..."
		}
		return Verdict{Kind: Refused, Message: "refused: " + r}
	case finishReason == "content_filter":
		return Verdict{Kind: Refused, Message: "stopped by the content filter (finish_reason content_filter)"}
	case finishReason == "tool_calls" || finishReason == "function_call":
		return Verdict{Kind: ToolCalls}
	}
	parsed, err := s.Validate(content)
	if err != nil {
		var ie *InvalidError
		errors.As(err, &ie)
		return Verdict{Kind: ie.Kind, Message: ie.Message}
	}
	return Verdict{Kind: Valid, Parsed: parsed}
}
