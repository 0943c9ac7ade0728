package tokens

import (
	"maps"
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
