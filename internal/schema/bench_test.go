package schema

import "testing"

// tenFields is a 10-field schema of the kind extraction runs use: strings,
// numbers, a boolean, an enum, a nullable field and a list.
const tenFields = `{"type":"object","properties":{
	"name":{"type":"string","description":"full name"},
	"age":{"type":"integer"},
	"score":{"type":"number","minimum":0,"maximum":1},
	"member":{"type":"boolean"},
	"email":{"type":["string","null"]},
	"country":{"type":"string","description":"ISO 3166 alpha-2"},
	"sentiment":{"type":"string","enum":["positive","neutral","negative"]},
	"tags":{"type":"array","items":{"type":"string"},"maxItems":5},
	"summary":{"type":"string"},
	"confidence":{"type":"number"}},
	"required":["name","age","score","member","email","country","sentiment","tags","summary","confidence"],
	"additionalProperties":false}`

// tenFieldAnswer is a valid answer to tenFields, as a model writes it.
const tenFieldAnswer = `{"name":"Ada Lovelace","age":36,"score":0.92,"member":true,"email":null,"country":"GB","sentiment":"positive","tags":["math","engines","poetry"],"summary":"Wrote the first published algorithm for Babbage's Analytical Engine.","confidence":0.87}`

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
