package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/gptbatch/gptbatch/internal/openaitest"
)

// openPTY opens a pseudo-terminal: the master end, which plays the user,
// and the terminal gptbatch sees. The test is skipped where there is none.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	var n, unlock uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		m.Close()
		t.Skipf("unlockpt: %v", e)
	}
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		m.Close()
		t.Skipf("ptsname: %v", e)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Skipf("open the terminal: %v", err)
	}
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s
}

// TestTerminalStdin: prompts typed at a terminal are read, with
// a word on stderr that gptbatch is reading them from it.
func TestTerminalStdin(t *testing.T) {
	t.Parallel()
	master, tty := openPTY(t)
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL()).loud()
	// The user types two prompts and Ctrl-D (end of input, in canonical mode).
	if _, err := master.WriteString("hello\nworld\n\x04"); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := g.runStreams(context.Background(), append(g.args, "--format", "text"), tty, &out, &errb)
	if code != 0 {
		t.Fatalf("exit status %d: %s", code, errb.String())
	}
	if rs := parseResults(t, out.String()); len(rs) != 2 || *rs[1].Content != "answer: world" {
		t.Errorf("results = %s, want the two prompts typed", out.String())
	}
	if !strings.HasPrefix(errb.String(), "gptbatch: reading prompts from the terminal") || !strings.Contains(errb.String(), "Ctrl-D") {
		t.Errorf("stderr = %q, want a word that the prompts come from the terminal, ended by Ctrl-D", errb.String())
	}
}
