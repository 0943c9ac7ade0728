package schema

import (
	"os"
	"strings"
	"testing"
)

// tenFields is a 10-field schema of the kind extraction runs use (strings,
// numbers, a boolean, an enum, a nullable field and a list), and
// tenFieldAnswer a valid answer to it as a model writes it: the fixtures
// the command's and the pipeline's tests use too.
var (
	tenFields      = fixture("../../testdata/schema/ten-fields.json")
	tenFieldAnswer = fixture("../../testdata/schema/ten-fields-answer.json")
)

// fixture is a file of the repository's testdata, without its last newline.
func fixture(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		panic(err)
	}
	return strings.TrimSuffix(string(b), "\n")
}

// BenchmarkValidate is one answer checked against a 10-field schema:
// parsed, validated and compacted.
func BenchmarkValidate(b *testing.B) {
	s := mustParse(b, tenFields)
	if _, err := s.Validate(tenFieldAnswer); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Validate(tenFieldAnswer); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkValidateInvalid is an answer that fails, with its message.
func BenchmarkValidateInvalid(b *testing.B) {
	s := mustParse(b, tenFields)
	bad := `{"name":"Ada Lovelace","age":"36","score":0.92,"member":true,"email":null,"country":"GB","sentiment":"glad","tags":["math"],"summary":"x","confidence":0.87}`
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Validate(bad); err == nil {
			b.Fatal("valid")
		}
	}
}
