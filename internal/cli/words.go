package cli

import "fmt"

// count is n and its noun, one or many: "1 line", "2 lines".
func count[N ~int | ~int64](n N, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
