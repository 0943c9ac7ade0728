package schema

import (
	"fmt"
	"strings"
	"testing"
)

// obj is an object schema of the given properties (JSON members), all
// required, additionalProperties false: strict unless a property breaks a
// rule.
func obj(props ...string) string {
	var names []string
	for _, p := range props {
		names = append(names, p[:strings.Index(p, ":")])
	}
	return `{"type":"object","properties":{` + strings.Join(props, ",") + `},"required":[` + strings.Join(names, ",") + `],"additionalProperties":false}`
}

func TestStrictModeRules(t *testing.T) {
	many := func(n int, f func(i int) string) []string {
		var s []string
		for i := range n {
			s = append(s, f(i))
		}
		return s
	}
	deep := `{"type":"string"}`
	for range 10 {
		deep = obj(`"d":` + deep)
	}
	tooDeep := obj(`"d":` + deep)
	bigEnum := `"e":{"type":"string","enum":[` + strings.Join(many(251, func(i int) string { return fmt.Sprintf(`"%060d"`, i) }), ",") + `]}`
	bigShortEnum := `"e":{"type":"string","enum":[` + strings.Join(many(251, func(i int) string { return fmt.Sprintf(`"%d"`, i) }), ",") + `]}`

	tests := []struct {
		name, schema string
		wantReason   string // "" for strict
	}{
		// Compliant.
		{"flat object", obj(`"a":{"type":"string"}`, `"b":{"type":"integer"}`), ""},
		{"nullable by a type array", obj(`"a":{"type":["string","null"]}`), ""},
		{"nullable by anyOf", obj(`"a":{"anyOf":[{"type":"string"},{"type":"null"}]}`), ""},
		{"supported constraints", obj(`"s":{"type":"string","pattern":"^@","format":"email"}`, `"n":{"type":"number","minimum":0,"exclusiveMaximum":5,"multipleOf":0.5}`, `"l":{"type":"array","items":{"type":"string"},"minItems":1,"maxItems":3}`), ""},
		{"enum and const", obj(`"e":{"type":"string","enum":["a","b"]}`, `"c":{"type":"integer","const":3}`), ""},
		{"$defs and $ref, recursion to the root", `{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","properties":{"p":{"$ref":"#/$defs/p"},"self":{"anyOf":[{"$ref":"#"},{"type":"null"}]}},"required":["p","self"],"additionalProperties":false,"$defs":{"p":` + obj(`"n":{"type":"string"}`) + `}}`, ""},
		{"title and description anywhere", `{"type":"object","title":"T","description":"D","properties":{"a":{"type":"string","title":"A","description":"a"}},"required":["a"],"additionalProperties":false}`, ""},
		{"10 levels deep", deep, ""},
		{"a big enum of short values", obj(bigShortEnum), ""},

		// Not compliant: each rule.
		{"root is not an object", `{"type":"array","items":{"type":"string"}}`, `#: the root is not "type": "object"`},
		{"root is anyOf", `{"anyOf":[` + obj(`"a":{"type":"string"}`) + `]}`, `#: the root is not "type": "object"`},
		{"additionalProperties missing", `{"type":"object","properties":{"a":{"type":"string"}},"required":["a"]}`, `#: an object without "additionalProperties": false`},
		{"additionalProperties true in a nested object", obj(`"o":{"type":"object","properties":{"a":{"type":"string"}},"required":["a"],"additionalProperties":true}`), `#/properties/o: an object without "additionalProperties": false`},
		{"a property not required", `{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"string"}},"required":["a"],"additionalProperties":false}`, `#: property "b" is not in "required"`},
		{"required names a missing property", `{"type":"object","properties":{"a":{"type":"string"}},"required":["a","z"],"additionalProperties":false}`, `#: "required" names "z"`},
		{"an object without properties", obj(`"o":{"type":"object","properties":{},"required":[],"additionalProperties":false}`), `#/properties/o: an object without properties`},
		{"minLength", obj(`"a":{"type":"string","minLength":1}`), `#/properties/a: "minLength" is not supported in strict mode`},
		{"default", obj(`"a":{"type":"string","default":"x"}`), `#/properties/a: "default" is not supported`},
		{"allOf", obj(`"a":{"type":"string","allOf":[{"type":"string"}]}`), `#/properties/a: "allOf" is not supported`},
		{"oneOf", obj(`"a":{"oneOf":[{"type":"string"}]}`), `#/properties/a: strict mode needs exactly one of "type", "anyOf" and "$ref"`},
		{"patternProperties", `{"type":"object","properties":{"a":{"type":"string"}},"required":["a"],"additionalProperties":false,"patternProperties":{"^x":{"type":"string"}}}`, `#: "patternProperties" is not supported`},
		{"minLength on a number type keyword set", obj(`"n":{"type":"integer","pattern":"1"}`), `#/properties/n: "pattern" is not supported`},
		{"$defs below the root", obj(`"o":{"type":"object","properties":{"a":{"type":"string"}},"required":["a"],"additionalProperties":false,"$defs":{}}`), `#/properties/o: "$defs" is not supported`},
		{"an unsupported format", obj(`"u":{"type":"string","format":"uri"}`), `#/properties/u: format uri is not one strict mode supports`},
		{"two non-null types", obj(`"a":{"type":["string","integer"]}`), `#/properties/a/type: strict mode takes one type name, or one and "null"`},
		{"an array without items", obj(`"l":{"type":"array"}`), `#/properties/l: an array without an "items" schema`},
		{"a $ref outside $defs", obj(`"x":{"type":"string"}`, `"p":{"$ref":"#/properties/x"}`), `#/properties/p: $ref "#/properties/x" is neither the root nor one of $defs`},
		{"a boolean schema", obj(`"a":true`), `#/properties/a: not a schema object`},
		{"an enum without a type", obj(`"e":{"enum":["a","b"]}`), `#/properties/e: strict mode needs exactly one of`},
		{"11 levels deep", tooDeep, "nested 11 levels deep, more than the 10 strict mode allows"},
		{"more than 5,000 properties", obj(many(50, func(i int) string {
			return fmt.Sprintf(`"o%d":`, i) + obj(many(100, func(j int) string { return fmt.Sprintf(`"p%d":{"type":"string"}`, j) })...)
		})...), "#: 5050 object properties, more than the 5000"},
		{"more than 1,000 enum values", obj(many(11, func(i int) string {
			return fmt.Sprintf(`"e%d":{"type":"integer","enum":[%s]}`, i, strings.Join(many(100, func(j int) string { return fmt.Sprint(j) }), ","))
		})...), "#: 1100 enum values, more than the 1000"},
		{"more than 120,000 characters of names", obj(many(3, func(i int) string { return fmt.Sprintf(`"%d%s":{"type":"string"}`, i, strings.Repeat("n", 40000)) })...), "#: 120003 characters of names and enum values, more than the 120000"},
		{"a big enum of long values", obj(bigEnum), "#/properties/e/enum: 251 values of 15060 characters; strict mode allows 15000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse(tt.schema)
			if err != nil {
				t.Fatalf("Parse error %v", err)
			}
			switch {
			case tt.wantReason == "" && !s.Strict():
				t.Errorf("Strict() = false, Reason() = %q; want strict", s.Reason())
			case tt.wantReason != "" && s.Strict():
				t.Errorf("Strict() = true; want not strict for %q", tt.wantReason)
			case tt.wantReason != "" && !strings.Contains(s.Reason(), tt.wantReason):
				t.Errorf("Reason() = %q, want one containing %q", s.Reason(), tt.wantReason)
			}
			if strings.Contains(s.Reason(), "\n") {
				t.Errorf("Reason() is more than one line: %q", s.Reason())
			}
			want := `"strict":true`
			if tt.wantReason != "" {
				want = `"strict":false`
			}
			if !strings.Contains(string(s.ChatFormat()), want) || !strings.Contains(string(s.ResponsesFormat()), want) {
				t.Errorf("formats do not say %s", want)
			}
		})
	}
}
