package pipeline

import (
	"bytes"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The package doc is the map of the package: it names every file but the
// tests, and a file of more than 500 lines says first why it is one file.
func TestPackageDocNamesEveryFile(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	f, err := parser.ParseFile(token.NewFileSet(), "pipeline.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil {
		t.Fatal(err)
	}
	doc := f.Doc.Text()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		t.Run(name, func(t *testing.T) {
			if !strings.Contains(doc, "\t"+name+" ") {
				t.Errorf("the package doc (pipeline.go) does not name %s: list it where a line meets it", name)
			}
			src, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			if n := bytes.Count(src, []byte("\n")); n > 500 && !bytes.HasPrefix(src, []byte("// "+name+" is one file")) {
				t.Errorf("%s has %d lines and does not begin with a comment saying why it is one file (%q)", name, n, "// "+name+" is one file ...")
			}
		})
	}
}
