// Package redistest starts a real redis-server for a test: on a free port
// on 127.0.0.1, with no persistence, killed when the test ends.
//
// Without redis-server installed the test is skipped, unless the
// environment has CI=true: then it fails, so that CI never passes by
// skipping. .ci/run installs redis-server with apt-get when it is missing.
package redistest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Path is where redis-server is looked for first; else $PATH.
const Path = "/usr/bin/redis-server"

// startTimeout bounds the wait for a server to say it is ready, on a busy
// machine.
const startTimeout = 30 * time.Second

// Server is one redis-server. Safe for concurrent use.
type Server struct {
	Addr string // host:port on 127.0.0.1

	bin  string
	conf string // a config file to start from (a sentinel's), or ""
	args []string
	dir  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Start starts a redis-server with the extra arguments given (as
// "--requirepass", "secret") and stops it at the test's cleanup.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	if _, err := binary(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server is not installed (CI=true): apt-get install redis-server")
		}
		t.Skip("redis-server is not installed; apt-get install redis-server to run this test (with CI=true it fails instead)")
	}
	s, err := Run(args...)
	if err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(s.Kill)
	return s
}

// Run starts a redis-server as Start does, outside a test (the load
// harness): the caller stops it with Kill and removes nothing else, since
// the server keeps no files.
func Run(args ...string) (*Server, error) {
	bin, err := binary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "redistest-")
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, args: args, dir: dir}
	// A free port can be taken by someone else before the server binds it:
	// try another.
	for range 5 {
		var port int
		if port, err = freePort(); err != nil {
			break
		}
		if err = s.start(fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			return s, nil
		}
	}
	os.RemoveAll(dir)
	return nil, err
}

// binary is the redis-server to run: Path, else the one on $PATH.
func binary() (string, error) {
	if _, err := os.Stat(Path); err == nil {
		return Path, nil
	}
	return exec.LookPath("redis-server")
}

// URL is the server's redis:// URL, database 0, with password when the
// server was started with one.
func (s *Server) URL(password string) string {
	if password != "" {
		return "redis://:" + password + "@" + s.Addr + "/0"
	}
	return "redis://" + s.Addr + "/0"
}

// Kill stops the server at once (SIGKILL) and waits for it to exit. It may
// be called more than once.
func (s *Server) Kill() {
	s.stop()
	// The directory only holds what --dir points at; a Restart makes it again.
	os.RemoveAll(s.dir)
}

// stop stops the server at once, keeping its directory.
func (s *Server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart starts the server again on the same address, empty (there is no
// persistence), after Kill.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Kill()
	if err := s.start(s.Addr); err != nil {
		t.Fatalf("restart redis-server: %v", err)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs the server on addr and waits until it logs that it accepts
// connections, then pings it.
func (s *Server) start(addr string) error {
	_, port, _ := net.SplitHostPort(addr)
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return err
	}
	args := append([]string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--daemonize", "no", "--logfile", ""}, s.args...)
	if s.conf != "" {
		// A sentinel rewrites its config file: one of its own, first.
		if err := os.WriteFile(filepath.Join(s.dir, "sentinel.conf"), []byte(s.conf), 0o600); err != nil {
			return err
		}
		args = append([]string{filepath.Join(s.dir, "sentinel.conf")}, args...)
	}
	cmd := exec.Command(s.bin, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	ready := make(chan struct{})
	var log strings.Builder // what it said, for the error when it does not start
	go func() {
		sc := bufio.NewScanner(out)
		said := false
		for sc.Scan() {
			if !said {
				log.WriteString(sc.Text() + "\n")
				if strings.Contains(sc.Text(), "Ready to accept connections") || strings.Contains(sc.Text(), "Sentinel ID is") {
					said = true
					close(ready)
				}
			}
		}
		io.Copy(io.Discard, out)
		cmd.Wait()
		close(done)
	}()
	select {
	case <-ready:
	case <-done:
		return fmt.Errorf("redis-server on %s exited: %s", addr, log.String())
	case <-time.After(startTimeout):
		cmd.Process.Kill()
		<-done
		return fmt.Errorf("redis-server on %s not ready after %v", addr, startTimeout)
	}
	if err := ping(addr); err != nil {
		cmd.Process.Kill()
		<-done
		return err
	}
	s.mu.Lock()
	s.Addr, s.cmd, s.done = addr, cmd, done
	s.mu.Unlock()
	return nil
}

// ping checks that the server answers: a PONG, or the NOAUTH error of one
// that wants a password.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, startTimeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(startTimeout))
	if _, err := io.WriteString(c, "PING\r\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("ping redis-server on %s: %w", addr, err)
	}
	if !strings.HasPrefix(line, "+PONG") && !strings.HasPrefix(line, "-NOAUTH") {
		return fmt.Errorf("ping redis-server on %s: %q", addr, line)
	}
	return nil
}

// Cluster is a Redis Cluster of three masters, each a Server on
// 127.0.0.1, made with redis-cli --cluster create.
type Cluster struct {
	Servers []*Server
}

// StartCluster starts a Cluster as Start starts a server (skipped, or
// failed with CI=true, without redis-server and redis-cli) and stops it at
// the test's cleanup.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	start(t)
	c, err := RunCluster()
	if err != nil {
		t.Fatalf("start a redis cluster: %v", err)
	}
	t.Cleanup(c.Kill)
	return c
}

// RunCluster starts a Cluster as StartCluster does, outside a test: the
// caller stops it with Kill.
func RunCluster() (*Cluster, error) {
	c := &Cluster{}
	for range 3 {
		// The bus's port, else the node's port + 10000, past 65535 for a
		// high free port.
		bus, err := freePort()
		if err != nil {
			c.Kill()
			return nil, err
		}
		s, err := Run("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000", "--cluster-port", strconv.Itoa(bus))
		if err != nil {
			c.Kill()
			return nil, err
		}
		c.Servers = append(c.Servers, s)
	}
	args := []string{"--cluster", "create"}
	for _, s := range c.Servers {
		args = append(args, s.Addr)
	}
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		c.Kill()
		return nil, fmt.Errorf("redis-cli --cluster create: %v: %s", err, out)
	}
	// Every node must know every slot before a client is pointed at it.
	for _, s := range c.Servers {
		if err := waitClusterOK(s); err != nil {
			c.Kill()
			return nil, err
		}
	}
	return c, nil
}

// waitClusterOK waits until s says the cluster is ok.
func waitClusterOK(s *Server) error {
	deadline := time.Now().Add(startTimeout)
	for {
		out, err := exec.Command("redis-cli", "-h", "127.0.0.1", "-p", port(s.Addr), "cluster", "info").Output()
		if err == nil && strings.Contains(string(out), "cluster_state:ok") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis cluster on %s not ready after %v: %s", s.Addr, startTimeout, out)
		}
		time.Sleep(20 * time.Millisecond) // redis-cli has no way to wait for the state
	}
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// URL is the redis:// URL of one node: the client finds the others.
func (c *Cluster) URL() string { return "redis://" + c.Servers[0].Addr }

// SeedsURL is the redis:// URL that names every node, in go-redis's form
// (redis://host1:port1?addr=host2:port2&addr=host3:port3).
func (c *Cluster) SeedsURL() string {
	u := "redis://" + c.Servers[0].Addr
	for i, s := range c.Servers[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += sep + "addr=" + s.Addr
	}
	return u
}

// Server is the node on addr (host:port), or nil.
func (c *Cluster) Server(addr string) *Server {
	for _, s := range c.Servers {
		if s.Addr == addr {
			return s
		}
	}
	return nil
}

// Stop stops the node s at once, as a node that dies; Restart starts it
// again.
func (c *Cluster) Stop(s *Server) { s.stop() }

// Restart starts the node s again on its address, empty (there is no
// persistence) but with its place in the cluster, and waits until the
// cluster is ok.
func (c *Cluster) Restart(t testing.TB, s *Server) {
	t.Helper()
	s.stop()
	if err := s.start(s.Addr); err != nil {
		t.Fatalf("restart redis cluster node: %v", err)
	}
	for _, n := range c.Servers {
		if err := waitClusterOK(n); err != nil {
			t.Fatal(err)
		}
	}
}

// Kill stops every node.
func (c *Cluster) Kill() {
	for _, s := range c.Servers {
		s.Kill()
	}
}

// The servers Shared and SharedCluster started, for Main to stop.
var shared struct {
	mu      sync.Mutex
	server  *Server
	cluster *Cluster
	err     error
}

// Shared is one redis-server for every test of a package that calls it,
// started by the first (skipped as Start is, without redis-server) and
// stopped by Main after the last: tests keep apart by their keys.
func Shared(t testing.TB) *Server {
	t.Helper()
	start(t)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.server == nil && shared.err == nil {
		shared.server, shared.err = Run()
	}
	if shared.err != nil {
		t.Fatalf("start redis-server: %v", shared.err)
	}
	return shared.server
}

// SharedCluster is one Cluster for every test of a package that calls it,
// as Shared is one server.
func SharedCluster(t testing.TB) *Cluster {
	t.Helper()
	start(t)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.cluster == nil && shared.err == nil {
		shared.cluster, shared.err = RunCluster()
	}
	if shared.err != nil {
		t.Fatalf("start a redis cluster: %v", shared.err)
	}
	return shared.cluster
}

// start skips t, or fails it with CI=true, when redis-server or redis-cli
// is not installed.
func start(t testing.TB) {
	t.Helper()
	_, err := binary()
	if err == nil {
		_, err = exec.LookPath("redis-cli")
	}
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("redis-server or redis-cli is not installed (CI=true): apt-get install redis-server")
	}
	t.Skip("redis-server or redis-cli is not installed; apt-get install redis-server to run this test (with CI=true it fails instead)")
}

// Main runs a package's tests, then stops the servers Shared and
// SharedCluster started: call os.Exit(redistest.Main(m)) from TestMain.
func Main(m *testing.M) int {
	code := m.Run()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.server != nil {
		shared.server.Kill()
	}
	if shared.cluster != nil {
		shared.cluster.Kill()
	}
	return code
}

// StartSentinel starts a redis-server and a Sentinel that watches it as
// the master named master, as Start starts a server, and returns the
// Sentinel: a client given its address and the master's name finds the
// master through it.
func StartSentinel(t testing.TB, master string) *Server {
	t.Helper()
	m := Start(t)
	bin, _ := binary()
	dir, err := os.MkdirTemp("", "redistest-")
	if err != nil {
		t.Fatal(err)
	}
	host, mport, _ := net.SplitHostPort(m.Addr)
	s := &Server{bin: bin, dir: dir, args: []string{"--sentinel"},
		conf: fmt.Sprintf("sentinel monitor %s %s %s 1\n", master, host, mport)}
	var port int
	for range 5 {
		if port, err = freePort(); err == nil {
			if err = s.start(fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
				t.Cleanup(s.Kill)
				return s
			}
		}
	}
	os.RemoveAll(dir)
	t.Fatalf("start redis-server --sentinel: %v", err)
	return nil
}
