package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// mustParse parses value or fails the test.
func mustParse(t testing.TB, value string) *Schema {
	t.Helper()
	s, err := Parse(value)
	if err != nil {
		t.Fatalf("Parse(%q) error %v", value, err)
	}
	return s
}

func TestValidateGivesTheCompactValue(t *testing.T) {
	s := mustParse(t, "name, age int, note")
	got, err := s.Validate(" {\n  \"name\": \"Ada <Lovelace>\",\n  \"age\": 36,\n  \"note\": \"a & b\"\n}\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"name":"Ada <Lovelace>","age":36,"note":"a & b"}`; string(got) != want {
		t.Errorf("Validate = %s, want %s", got, want)
	}
}

// The message is short and says where and what, for a model to read.
func TestValidateMessages(t *testing.T) {
	s := mustParse(t, `{"type":"object","properties":{
		"name":{"type":"string"},"age":{"type":"integer"},"x":{"type":["string","null"]},
		"y":{"anyOf":[{"type":"string"},{"type":"null"}]},"email":{"type":"string","format":"email"},
		"kind":{"type":"string","enum":["a","b"]},"opt":{"anyOf":[{"type":"string","enum":["a","b"]},{"type":"null"}]}},
		"required":["name","age","x","y","email","kind"],"additionalProperties":false}`)
	valid := `{"name":"A","age":1,"x":null,"y":"s","email":"a@b.org","kind":"a"}`
	if _, err := s.Validate(valid); err != nil {
		t.Fatalf("Validate(%s) error %v", valid, err)
	}
	tests := []struct {
		name, answer string
		wantKind     Kind
		wantMsg      string
	}{
		{"a wrong type", `{"name":"A","age":"36","x":null,"y":"s","email":"a@b.org","kind":"a"}`, Mismatch, "at /age: got string, want integer"},
		{"a missing property", `{"age":1,"x":null,"y":"s","email":"a@b.org","kind":"a"}`, Mismatch, "at top level: missing property 'name'"},
		{"an extra property", `{"name":"A","age":1,"x":null,"y":"s","email":"a@b.org","kind":"a","z":1}`, Mismatch, "at top level: additional properties 'z' not allowed"},
		{"a type array", `{"name":"A","age":1,"x":3,"y":"s","email":"a@b.org","kind":"a"}`, Mismatch, "at /x: got number, want null or string"},
		{"an anyOf of types is one message", `{"name":"A","age":1,"x":null,"y":3,"email":"a@b.org","kind":"a"}`, Mismatch, "at /y: got number, want string or null"},
		{"a format", `{"name":"A","age":1,"x":null,"y":"s","email":"not an email","kind":"a"}`, Mismatch, "at /email: 'not an email' is not valid email"},
		{"a nullable enum", `{"name":"A","age":1,"x":null,"y":"s","email":"a@b.org","kind":"a","opt":"c"}`, Mismatch, "at /opt: value must be one of 'a', 'b', or be null"},
		{"an enum", `{"name":"A","age":1,"x":null,"y":"s","email":"a@b.org","kind":"c"}`, Mismatch, "at /kind: value must be one of 'a', 'b'"},
		{"many causes, the first five", `{"age":"1","x":1,"y":1,"email":1,"kind":1,"z":1}`, Mismatch, "; and 2 more"},
		{"not an object", `[1]`, Mismatch, "at top level: got array, want object"},
		{"empty", "  ", NotJSON, "not JSON: the answer is empty"},
		{"prose", "Sure! Here it is.", NotJSON, "not JSON: invalid character 'S' looking for beginning of value at byte 1"},
		{"cut short", `{"name":"A","age":`, NotJSON, "not JSON: it ends before the JSON value does"},
		{"text after the value", valid + " Hope this helps!", NotJSON, "not JSON: invalid character after top-level value"},
		{"a fenced block", "```json\n" + valid + "\n```", NotJSON, "not JSON: invalid character '`'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parsed, err := s.Validate(tt.answer)
			var ie *InvalidError
			if !errors.As(err, &ie) {
				t.Fatalf("Validate(%q) = %s, %v; want an *InvalidError", tt.answer, parsed, err)
			}
			if ie.Kind != tt.wantKind || !strings.Contains(ie.Message, tt.wantMsg) {
				t.Errorf("Validate(%q) error = %v %q, want %v containing %q", tt.answer, ie.Kind, ie.Message, tt.wantKind, tt.wantMsg)
			}
			if strings.Contains(ie.Message, "\n") || strings.Contains(ie.Message, "gptbatch.invalid") {
				t.Errorf("Validate(%q) message %q is not one clean line", tt.answer, ie.Message)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	s := mustParse(t, "name, age int")
	valid := `{"name":"A","age":1}`
	tests := []struct {
		name                           string
		content, finishReason, refusal string
		want                           Verdict
		retry                          bool
	}{
		{"valid", valid, "stop", "", Verdict{Kind: Valid, Parsed: []byte(valid)}, false},
		{"valid without a finish reason", valid, "", "", Verdict{Kind: Valid, Parsed: []byte(valid)}, false},
		{"mismatch", `{"name":"A"}`, "stop", "", Verdict{Kind: Mismatch, Message: "at top level: missing property 'age'"}, true},
		{"not JSON", "no", "stop", "", Verdict{Kind: NotJSON, Message: "not JSON: invalid character 'o' in literal null (expecting 'u') at byte 2"}, true},
		{"cut off, though it parses, is never parsed", valid, "length", "", Verdict{Kind: Truncated, Message: "cut off at the output token limit (finish_reason length)"}, true},
		{"refused", "", "stop", "I can't help with that.", Verdict{Kind: Refused, Message: "refused: I can't help with that."}, true},
		{"content filter", valid, "content_filter", "", Verdict{Kind: Refused, Message: "stopped by the content filter (finish_reason content_filter)"}, true},
		{"a tool call is not checked", "", "tool_calls", "", Verdict{Kind: ToolCalls}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := s.Classify(tt.content, tt.finishReason, tt.refusal)
			if got.Kind != tt.want.Kind || string(got.Parsed) != string(tt.want.Parsed) || got.Message != tt.want.Message {
				t.Errorf("Classify(%q, %q, %q) = %v %s %q, want %v %s %q", tt.content, tt.finishReason, tt.refusal,
					got.Kind, got.Parsed, got.Message, tt.want.Kind, tt.want.Parsed, tt.want.Message)
			}
			if got.Retry() != tt.retry {
				t.Errorf("Retry() = %v, want %v", got.Retry(), tt.retry)
			}
		})
	}
}

func TestClassifyShortensALongRefusal(t *testing.T) {
	s := mustParse(t, "name")
	v := s.Classify("", "stop", strings.Repeat("é", 150))
	if len(v.Message) > len("refused: ")+maxRefusal+3 || !strings.HasSuffix(v.Message, "...") || !strings.HasPrefix(v.Message, "refused: é") {
		t.Errorf("Classify(a 300-byte refusal).Message = %q (%d bytes)", v.Message, len(v.Message))
	}
}

func TestParsedIsWhatJSONCompactWrites(t *testing.T) {
	s := mustParse(t, `{"type":["object","array","string","number","boolean","null"]}`)
	for _, in := range []string{
		"{ \"a\" : [ 1 , 2.5e3 , -0 ] ,\n\t\"b\" : \"x y\\\" \\\\\" , \"c\":{ } }",
		"\r\n [ true , false , null , \"\\\\\" , \"\\\\\\\" \" ] ",
		` "a \" b\\" `,
		` 12 `,
		`{"é":"\u00e9 <&>"}`,
	} {
		got, err := s.Validate(in)
		if err != nil {
			t.Fatalf("Validate(%q) error %v", in, err)
		}
		var want bytes.Buffer
		if err := json.Compact(&want, []byte(in)); err != nil {
			t.Fatal(err)
		}
		if string(got) != want.String() {
			t.Errorf("Validate(%q) = %s, want %s", in, got, want.String())
		}
	}
}

// The same invalid answer gets the same message every time, so its re-ask
// is the same request.
func TestValidateMessageIsStable(t *testing.T) {
	s := mustParse(t, tenFields)
	bad := `{"age":"1","email":1,"a":1,"b":2,"c":3,"d":4}`
	_, first := s.Validate(bad)
	if first == nil {
		t.Fatal("Validate(an invalid answer) = nil error")
	}
	for range 50 {
		if _, err := s.Validate(bad); err.Error() != first.Error() {
			t.Fatalf("Validate messages differ:\n%v\n%v", first, err)
		}
	}
	if want := "at /age: got string, want integer; at /email: got number, want null or string; at top level: additional properties 'a', 'b', 'c', 'd' not allowed; at top level: missing properties 'confidence', 'country', 'member', 'name', 'score', 'sentiment', 'summary', 'tags'"; first.Error() != want {
		t.Errorf("Validate message =\n%v\nwant\n%s", first, want)
	}
}
