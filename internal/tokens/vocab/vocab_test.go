package vocab

import (
	"bytes"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	tiktoken_loader "github.com/pkoukk/tiktoken-go-loader"
)

// The fast loader must give exactly the ranks the library's loader gives.
func TestFastLoader(t *testing.T) {
	for _, f := range []string{"o200k_base.tiktoken", "cl100k_base.tiktoken"} {
		want, err := tiktoken_loader.NewOfflineLoader().LoadTiktokenBpe(f)
		if err != nil {
			t.Fatal(err)
		}
		got, err := fastLoader{}.LoadTiktokenBpe("https://example/" + f)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) || !maps.Equal(got, want) {
			t.Errorf("fastLoader.LoadTiktokenBpe(%s): %d ranks, differ from the offline loader's %d", f, len(got), len(want))
		}
	}
}

func BenchmarkLoader(b *testing.B) {
	b.Run("offline", func(b *testing.B) {
		for b.Loop() {
			_, _ = tiktoken_loader.NewOfflineLoader().LoadTiktokenBpe("o200k_base.tiktoken")
		}
	})
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			_, _ = fastLoader{}.LoadTiktokenBpe("o200k_base.tiktoken")
		}
	})
}

// tiktoken-go's loader is one unsynchronised variable: a second package
// setting its own raced with the counter's GetEncoding under -race (the
// fake API's and the counter's, built at once by parallel tests). Only
// Offline may set it.
func TestOnlyOfflineSetsTheLoader(t *testing.T) {
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	self, _ := filepath.Abs("vocab.go")
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || p == self {
			return err
		}
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte("SetBpeLoader(")) && !strings.HasSuffix(p, "_test.go") {
			t.Errorf("%s sets tiktoken-go's loader: call vocab.Offline instead", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
