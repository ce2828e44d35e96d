package engine

import (
	"bufio"
	"compress/gzip"
	"compress/zlib"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/ch-go/compress"
	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
	"github.com/rs/zerolog"

	"github.com/tenantscope/tenantscope/engine/chdb"
)

// User is one account of the HTTP interface.
type User struct {
	Password string
	// ReadOnly users run every statement on read-only connections (readonly=2),
	// whatever the method, sessions included.
	ReadOnly bool
}

// ServerConfig configures the HTTP interface.
type ServerConfig struct {
	// Users maps user name to its account. Every request must name one with
	// its password (loopback included); with none configured the interface
	// answers only /ping.
	Users map[string]User
	// AllowOrigins lists the browser origins (scheme://host[:port]) that may
	// send requests; a request with any other Origin header is refused. Empty:
	// no browser may.
	AllowOrigins []string
	// Hosts lists extra Host header values (host or host:port) accepted
	// besides the listen address and its loopback names, against DNS
	// rebinding. A wildcard listen address accepts any Host.
	Hosts []string
	// URLHosts are the host:port pairs url() may read (the configured region
	// engines). Nothing else outside the engine is reachable by SQL.
	URLHosts []string
	// BodyIdle ends a request whose body sends nothing for this long (a
	// stalled or slowloris upload); 0 means 30s.
	BodyIdle time.Duration
	// TLSCert and TLSKey, when set, serve the interface over TLS (https).
	TLSCert, TLSKey string
	// MaxBodyBytes limits a request body, before and after decompression;
	// 0 means 1 GiB.
	MaxBodyBytes int64
	// MaxSessions limits open session_id sessions; 0 means 64.
	MaxSessions int
	// DefaultSessionTimeout applies when session_timeout is absent; 0 means 60s.
	DefaultSessionTimeout time.Duration
	Logger                zerolog.Logger
}

// Server serves an Engine through ClickHouse's HTTP interface.
type Server struct {
	eng *Engine
	cfg ServerConfig
	log zerolog.Logger
	sb  *sandbox

	hmu   sync.Mutex
	hosts map[string]bool // accepted Host values; nil: any

	smu      sync.Mutex
	sessions map[string]*session
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

type session struct {
	mu       sync.Mutex
	conn     *Conn
	timeout  time.Duration
	lastUsed time.Time
	user     string
}

// NewServer returns the HTTP interface of eng. Close it before the engine.
func NewServer(eng *Engine, cfg ServerConfig) *Server {
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 1 << 30
	}
	if cfg.MaxSessions == 0 {
		cfg.MaxSessions = 64
	}
	if cfg.DefaultSessionTimeout == 0 {
		cfg.DefaultSessionTimeout = 60 * time.Second
	}
	if cfg.BodyIdle == 0 {
		cfg.BodyIdle = 30 * time.Second
	}
	s := &Server{eng: eng, cfg: cfg, log: cfg.Logger, sessions: map[string]*session{}, stop: make(chan struct{}),
		sb: newSandbox(eng.callables(), cfg.URLHosts)}
	s.wg.Add(1)
	go s.expireSessions()
	return s
}

// idleBody extends the connection's read deadline before each read of the
// body: a body that stalls ends the request after idle, a large insert
// that keeps flowing is never cut off.
type idleBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration
}

func (b *idleBody) Read(p []byte) (int, error) {
	_ = b.rc.SetReadDeadline(time.Now().Add(b.idle)) //nolint:errcheck // unsupported writers keep the server's timeouts
	return b.ReadCloser.Read(p)
}

// ErrNoUsers is returned when the interface would serve with no user.
var ErrNoUsers = errors.New("engine: refusing to serve without users: configure a user and password")

// Listen opens addr and accepts the Host values that name it.
func (s *Server) Listen(addr string) (net.Listener, error) {
	if len(s.cfg.Users) == 0 {
		return nil, ErrNoUsers
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("engine: listen %s: %w", addr, err)
	}
	s.AcceptHostsOf(ln.Addr().String())
	return ln, nil
}

// AcceptHostsOf sets the accepted Host values for a bound address: the
// address, its port on localhost, 127.0.0.1 and [::1], and the configured
// names. A wildcard address accepts any Host (credentials still apply).
func (s *Server) AcceptHostsOf(bound string) {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	host, port, err := net.SplitHostPort(bound)
	if err != nil {
		return
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		s.hosts = nil
		return
	}
	hosts := map[string]bool{strings.ToLower(bound): true}
	if isLoopback(bound) {
		for _, h := range []string{"localhost", "127.0.0.1", "[::1]"} {
			hosts[h+":"+port] = true
		}
	}
	for _, h := range s.cfg.Hosts {
		h = strings.ToLower(h)
		hosts[h] = true
		if !strings.Contains(h, ":") || strings.HasSuffix(h, "]") {
			hosts[h+":"+port] = true
		}
	}
	s.hosts = hosts
}

// AllowURLHost lets url() read host:port from now on (a region engine that
// started after this one).
func (s *Server) AllowURLHost(hostport string) { s.sb.allowHost(hostport) }

func (s *Server) hostAllowed(host string) bool {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	return s.hosts == nil || s.hosts[strings.ToLower(host)]
}

func (s *Server) originAllowed(origin string) bool {
	for _, o := range s.cfg.AllowOrigins {
		if strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			return true
		}
	}
	return false
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Close ends every session and stops the session janitor.
func (s *Server) Close() {
	s.stopOnce.Do(func() { close(s.stop) })
	s.wg.Wait()
	s.smu.Lock()
	defer s.smu.Unlock()
	for id, ss := range s.sessions {
		ss.mu.Lock()
		s.eng.closeDedicated(ss.conn)
		ss.mu.Unlock()
		delete(s.sessions, id)
	}
}

func (s *Server) expireSessions() {
	defer s.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.smu.Lock()
			for id, ss := range s.sessions {
				if ss.mu.TryLock() {
					if now.Sub(ss.lastUsed) > ss.timeout {
						s.eng.closeDedicated(ss.conn)
						delete(s.sessions, id)
					}
					ss.mu.Unlock()
				}
			}
			s.smu.Unlock()
		}
	}
}

// ServeHTTP implements the interface.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Body != nil && r.Body != http.NoBody {
		// Before anything may refuse the request: net/http drains an unread
		// body before it answers, so a refused request with a stalled body
		// would otherwise hold the connection.
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.cfg.BodyIdle)) //nolint:errcheck // unsupported writers keep the server's timeouts
	}
	if !s.hostAllowed(r.Host) {
		s.fail(w, nil, &Exception{Code: 497, Name: "ACCESS_DENIED", Status: http.StatusForbidden,
			Message: "Host " + strconv.Quote(r.Host) + " is not an address of this server"})
		return
	}
	if o := r.Header.Get("Origin"); o != "" && !s.originAllowed(o) {
		s.fail(w, nil, &Exception{Code: 497, Name: "ACCESS_DENIED", Status: http.StatusForbidden,
			Message: "requests from browser origin " + strconv.Quote(o) + " are not allowed"})
		return
	}
	switch r.URL.Path {
	case "/ping", "/replicas_status":
		w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
		_, _ = io.WriteString(w, "Ok.\n") //nolint:errcheck // client gone is not our error
		return
	case "/", "/query":
	default:
		s.fail(w, nil, &Exception{Code: 1002, Name: "UNKNOWN_EXCEPTION", Status: http.StatusNotFound,
			Message: fmt.Sprintf("There is no handle %s. Use / or /ping", r.URL.Path)})
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodPost && r.Method != http.MethodHead {
		s.fail(w, nil, &Exception{Code: 1002, Name: "UNKNOWN_EXCEPTION", Status: http.StatusMethodNotAllowed, Message: "method " + r.Method + " is not allowed"})
		return
	}
	user, ex := s.authenticate(r)
	if ex != nil {
		s.fail(w, nil, ex)
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &idleBody{ReadCloser: r.Body, rc: http.NewResponseController(w), idle: s.cfg.BodyIdle}
	}
	req, ex := s.parse(r)
	if ex != nil {
		s.fail(w, req, ex)
		return
	}
	req.user = user.name
	if user.ReadOnly {
		req.readonly = true
		req.readOnlyUser = true
		delete(req.settings, "readonly")
	}
	if ex := s.confine(req); ex != nil {
		s.fail(w, req, ex)
		return
	}
	if req.sql == "" && req.body == nil {
		w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
		_, _ = io.WriteString(w, "Ok.\n") //nolint:errcheck // client gone is not our error
		return
	}
	if ex := s.run(w, r, req); ex != nil {
		s.fail(w, req, ex)
	}
}

// Exception is a ClickHouse-style error.
type Exception struct {
	Code    int
	Name    string
	Message string
	Status  int
}

func (e *Exception) Error() string { return e.text() }

func (e *Exception) text() string {
	return fmt.Sprintf("Code: %d. DB::Exception: %s. (%s)", e.Code, strings.TrimSuffix(e.Message, "."), e.Name)
}

var codeRe = regexp.MustCompile(`^Code: (\d+)\.`)
var nameRe = regexp.MustCompile(`\(([A-Z][A-Z0-9_]+)\)`)

// engineException wraps an engine error, keeping its text and code.
func engineException(err error) *Exception {
	var ce *chdb.Error
	if !errors.As(err, &ce) {
		return &Exception{Code: 1001, Name: "STD_EXCEPTION", Message: err.Error(), Status: http.StatusInternalServerError}
	}
	ex := &Exception{Code: 1001, Name: "STD_EXCEPTION", Message: ce.Message}
	if m := codeRe.FindStringSubmatch(ce.Message); m != nil {
		ex.Code, _ = strconv.Atoi(m[1]) //nolint:errcheck // the regexp admits only digits
	}
	if m := nameRe.FindAllStringSubmatch(ce.Message, -1); len(m) > 0 {
		ex.Name = m[len(m)-1][1]
	}
	ex.Status = statusFor(ex.Code)
	return ex
}

// raw reports whether Message is already the engine's full text.
func (e *Exception) body() string {
	if strings.HasPrefix(e.Message, "Code: ") {
		return strings.TrimRight(e.Message, "\n") + "\n"
	}
	return e.text() + "\n"
}

// statusFor maps exception codes to HTTP status as ClickHouse's server does.
func statusFor(code int) int {
	switch code {
	case 164, 192, 193, 194, 497, 516: // READONLY, UNKNOWN_USER, WRONG_PASSWORD, REQUIRED_PASSWORD, ACCESS_DENIED, AUTHENTICATION_FAILED
		return http.StatusForbidden
	case 6, 25, 26, 27, 38, 41, 62, 72, 117, 53, 36, 48, 49, 167, 168, 223, 33, 271, 434, 457:
		// parse errors, SYNTAX_ERROR, INCORRECT_DATA, TYPE_MISMATCH, BAD_ARGUMENTS,
		// CANNOT_READ_ALL_DATA, CANNOT_DECOMPRESS, CANNOT_PARSE_PROTOBUF_SCHEMA, BAD_QUERY_PARAMETER
		return http.StatusBadRequest
	case 46, 47, 50, 56, 60, 63, 73, 81, 115, 372:
		// UNKNOWN_FUNCTION/IDENTIFIER/TYPE/STORAGE/TABLE/AGGREGATE_FUNCTION/FORMAT/DATABASE/SETTING, SESSION_NOT_FOUND
		return http.StatusNotFound
	case 307:
		return http.StatusRequestEntityTooLarge
	case 373: // SESSION_IS_LOCKED
		return http.StatusConflict
	case 202, 203: // TOO_MANY_SIMULTANEOUS_QUERIES, NO_FREE_CONNECTION
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func (s *Server) fail(w http.ResponseWriter, req *request, ex *Exception) {
	if ex.Status == 0 {
		ex.Status = statusFor(ex.Code)
	}
	h := w.Header()
	h.Del("Content-Encoding")
	h.Set("Content-Type", "text/plain; charset=UTF-8")
	h.Set("X-ClickHouse-Exception-Code", strconv.Itoa(ex.Code))
	s.commonHeaders(h, req)
	w.WriteHeader(ex.Status)
	_, _ = io.WriteString(w, ex.body()) //nolint:errcheck // client gone is not our error
	ev := s.log.Debug()
	if ex.Status >= 500 {
		ev = s.log.Warn()
	}
	ev.Int("code", ex.Code).Int("status", ex.Status).Msg("clickhouse http: " + firstLine(ex.body()))
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func (s *Server) commonHeaders(h http.Header, req *request) {
	h.Set("X-ClickHouse-Server-Display-Name", s.eng.DisplayName)
	h.Set("X-ClickHouse-Timezone", s.eng.Timezone)
	if req != nil {
		h.Set("X-ClickHouse-Query-Id", req.queryID)
	}
}

// request is what one HTTP request asks the engine to do.
type request struct {
	readonly       bool
	readOnlyUser   bool
	sql            string    // the statement (from URL, body, or both)
	body           io.Reader // insert data, or nil
	database       string
	defaultFormat  string
	queryID        string
	tag            string
	sessionID      string
	sessionTimeout time.Duration
	sessionCheck   bool
	settings       map[string]string
	params         []chdb.Param
	revision       uint64 // client_protocol_version
	compress       bool   // ClickHouse block compression of the response
	compressMethod compress.Method
	httpCompress   string // response Content-Encoding
	user           string
}

var settingNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

// URL parameters that are part of the protocol, not settings.
var protocolParams = map[string]bool{
	"query": true, "database": true, "default_format": true, "query_id": true,
	"session_id": true, "session_timeout": true, "session_check": true,
	"compress": true, "decompress": true, "enable_http_compression": true,
	"client_protocol_version": true, "user": true, "password": true, "quota_key": true,
	"network_compression_method": true, "network_zstd_compression_level": true,
	"http_zlib_compression_level": true, "buffer_size": true, "wait_end_of_query": true,
	"send_progress_in_http_headers": true, "http_headers_progress_interval_ms": true,
	"role": true, "default_role": true,
}

func (s *Server) parse(r *http.Request) (*request, *Exception) {
	q := r.URL.Query()
	req := &request{
		readonly:      r.Method != http.MethodPost,
		settings:      map[string]string{},
		database:      firstNonEmpty(r.Header.Get("X-ClickHouse-Database"), q.Get("database")),
		defaultFormat: firstNonEmpty(r.Header.Get("X-ClickHouse-Format"), q.Get("default_format"), "TabSeparated"),
		queryID:       q.Get("query_id"),
		sessionID:     q.Get("session_id"),
		sessionCheck:  q.Get("session_check") == "1",
		tag:           "tsq" + randomHex(8),
	}
	if req.queryID == "" {
		req.queryID = randomUUID()
	}
	if v := q.Get("client_protocol_version"); v != "" {
		rev, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return req, &Exception{Code: 36, Name: "BAD_ARGUMENTS", Message: "client_protocol_version must be a number, got " + strconv.Quote(v)}
		}
		req.revision = min(rev, s.eng.Revision)
	}
	req.sessionTimeout = s.cfg.DefaultSessionTimeout
	if v := q.Get("session_timeout"); v != "" {
		sec, err := strconv.ParseUint(v, 10, 32)
		if err != nil || sec > 3600 {
			return req, &Exception{Code: 36, Name: "BAD_ARGUMENTS", Message: "session_timeout must be a number of seconds up to 3600, got " + strconv.Quote(v)}
		}
		req.sessionTimeout = time.Duration(sec) * time.Second
	}
	if q.Get("compress") == "1" {
		req.compress = true
		req.compressMethod = compress.LZ4
		if m := q.Get("network_compression_method"); m != "" {
			switch strings.ToUpper(m) {
			case "LZ4":
			case "ZSTD":
				req.compressMethod = compress.ZSTD
			case "NONE":
				req.compressMethod = compress.None
			default:
				return req, &Exception{Code: 36, Name: "BAD_ARGUMENTS", Message: "unknown network_compression_method " + strconv.Quote(m)}
			}
		}
	}
	if v := q.Get("enable_http_compression"); v == "1" || strings.EqualFold(v, "true") {
		req.httpCompress = pickEncoding(r.Header.Get("Accept-Encoding"))
	}
	for k, vs := range q {
		v := vs[len(vs)-1]
		switch {
		case strings.HasPrefix(k, "param_"):
			req.params = append(req.params, chdb.Param{Name: strings.TrimPrefix(k, "param_"), Value: v})
		case protocolParams[k]:
		case !settingNameRe.MatchString(k):
			return req, &Exception{Code: 115, Name: "UNKNOWN_SETTING", Message: "Unknown setting " + strconv.Quote(k)}
		default:
			if k == "readonly" && req.readonly {
				continue // GET requests are always readonly=2
			}
			req.settings[k] = v
		}
	}
	urlQuery := q.Get("query")
	if r.Method != http.MethodPost {
		req.sql = urlQuery
		return req, nil
	}
	body, ex := s.decodeBody(r, q.Get("decompress") == "1")
	if ex != nil {
		return req, ex
	}
	if urlQuery != "" {
		kind := statementKind(urlQuery)
		if kind == "INSERT" {
			req.sql = urlQuery
			req.body = body
			return req, nil
		}
		rest, err := readLimited(body, s.cfg.MaxBodyBytes)
		if err != nil {
			return req, bodyException(err)
		}
		req.sql = urlQuery
		if len(rest) > 0 {
			req.sql += "\n" + string(rest)
		}
		return req, nil
	}
	// The statement is the body. An INSERT's inline data follows its FORMAT
	// clause and is streamed; look at a bounded prefix to find it.
	n := headSize(r, q.Get("decompress") == "1")
	br := bufio.NewReaderSize(body, n)
	head, err := br.Peek(n)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return req, bodyException(err)
	}
	hs := string(head)
	if statementKind(hs) == "INSERT" {
		if _, end, _, ok := formatClause(hs, true); ok {
			start := insertDataStart(hs, end)
			req.sql = hs[:end]
			if _, err := br.Discard(start); err != nil {
				return req, bodyException(err)
			}
			req.body = br
			return req, nil
		}
	}
	all, err := readLimited(br, s.cfg.MaxBodyBytes)
	if err != nil {
		return req, bodyException(err)
	}
	req.sql = string(all)
	return req, nil
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) //nolint:errcheck // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b)
}

func randomUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) //nolint:errcheck // crypto/rand.Read never fails on Linux
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

type namedUser struct {
	User
	name string
}

// authenticate finds the request's user: X-ClickHouse-User/-Key, else basic
// auth, else user/password URL parameters, as ClickHouse reads them.
func (s *Server) authenticate(r *http.Request) (namedUser, *Exception) {
	user, pass := r.Header.Get("X-ClickHouse-User"), r.Header.Get("X-ClickHouse-Key")
	if user == "" {
		if u, p, ok := r.BasicAuth(); ok {
			user, pass = u, p
		}
	}
	if user == "" {
		q := r.URL.Query()
		user, pass = q.Get("user"), q.Get("password")
	}
	if user == "" {
		user = "default"
	}
	if u, ok := s.cfg.Users[user]; ok && subtle.ConstantTimeCompare([]byte(u.Password), []byte(pass)) == 1 {
		return namedUser{User: u, name: user}, nil
	}
	return namedUser{}, &Exception{Code: 516, Name: "AUTHENTICATION_FAILED", Status: http.StatusUnauthorized,
		Message: user + ": Authentication failed: password is incorrect, or there is no user with such name"}
}

// confine refuses what would reach outside the engine, and keeps streamed
// Values data from being evaluated as expressions (file(...) in a row).
func (s *Server) confine(req *request) *Exception {
	for k := range req.settings {
		if ex := s.sb.checkSetting(k); ex != nil {
			return ex
		}
	}
	if ex := s.sb.check(req.sql); ex != nil {
		return ex
	}
	if _, _, name, ok := formatClause(req.sql, true); ok && req.body != nil && strings.EqualFold(name, "Values") {
		req.settings["input_format_values_interpret_expressions"] = "0"
		req.settings["input_format_values_deduce_templates_of_expressions"] = "0"
	}
	return nil
}

func pickEncoding(accept string) string {
	for _, part := range strings.Split(accept, ",") {
		enc := strings.TrimSpace(strings.SplitN(part, ";", 2)[0])
		switch strings.ToLower(enc) {
		case "gzip", "deflate", "br", "zstd":
			return strings.ToLower(enc)
		}
	}
	return ""
}

// errTooLarge is the body limit.
type errTooLarge struct{ limit int64 }

func (e errTooLarge) Error() string {
	return fmt.Sprintf("request body is larger than the configured limit of %d bytes", e.limit)
}

func bodyException(err error) *Exception {
	var tl errTooLarge
	if errors.As(err, &tl) {
		return &Exception{Code: 307, Name: "TOO_MANY_BYTES", Message: tl.Error()}
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return &Exception{Code: 307, Name: "TOO_MANY_BYTES", Message: fmt.Sprintf("request body is larger than the configured limit of %d bytes", mbe.Limit)}
	}
	var ce *compress.CorruptedDataErr
	if errors.As(err, &ce) || errors.Is(err, gzip.ErrHeader) || errors.Is(err, gzip.ErrChecksum) || errors.Is(err, zlib.ErrHeader) || errors.Is(err, zlib.ErrChecksum) {
		return &Exception{Code: 271, Name: "CANNOT_DECOMPRESS", Message: "cannot decompress request body: " + err.Error()}
	}
	return &Exception{Code: 33, Name: "CANNOT_READ_ALL_DATA", Message: "cannot read request body: " + err.Error()}
}

// limitReader fails with errTooLarge instead of truncating.
type limitReader struct {
	r     io.Reader
	left  int64
	limit int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		var one [1]byte
		n, err := l.r.Read(one[:])
		if n > 0 {
			return 0, errTooLarge{l.limit}
		}
		if err == nil || errors.Is(err, io.EOF) {
			return 0, io.EOF
		}
		return 0, err
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

func readLimited(r io.Reader, limit int64) ([]byte, error) {
	return io.ReadAll(&limitReader{r: r, left: limit, limit: limit})
}

// maxHead is how much of a statement body parse looks at for an INSERT's
// FORMAT clause.
const maxHead = 1 << 20

// headSize is the prefix of a statement body parse reads ahead: maxHead,
// or the whole body when it is known to be shorter and comes as it will be
// read (no Content-Encoding, no ClickHouse compression). A SELECT of a few
// hundred bytes (most requests: the collector's DESCRIBE before each
// insert, count() polls, every page of the UI) used to take a 1 MiB buffer.
func headSize(r *http.Request, decompress bool) int {
	if decompress || r.Header.Get("Content-Encoding") != "" || r.ContentLength < 0 || r.ContentLength >= maxHead {
		return maxHead
	}
	return max(int(r.ContentLength)+1, 16) // +1: the peek sees the end; 16: bufio's least
}

// decodeBody undoes HTTP Content-Encoding and ClickHouse block compression,
// with the size limit before and after.
func (s *Server) decodeBody(r *http.Request, decompress bool) (io.Reader, *Exception) {
	var body io.Reader = http.MaxBytesReader(nil, r.Body, s.cfg.MaxBodyBytes)
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity", "none":
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			return nil, bodyException(err)
		}
		body = zr
	case "deflate":
		zr, err := zlib.NewReader(body)
		if err != nil {
			return nil, bodyException(err)
		}
		body = zr
	case "br":
		body = brotli.NewReader(body)
	case "zstd":
		zr, err := zstd.NewReader(body, zstd.WithDecoderMaxMemory(uint64(s.cfg.MaxBodyBytes)))
		if err != nil {
			return nil, bodyException(err)
		}
		body = zr.IOReadCloser()
	default:
		return nil, &Exception{Code: 36, Name: "BAD_ARGUMENTS", Status: http.StatusUnsupportedMediaType,
			Message: "Unknown Content-Encoding " + strconv.Quote(enc) + "; supported: gzip, deflate, br, zstd"}
	}
	if decompress {
		body = compress.NewReader(body)
	}
	return &limitReader{r: body, left: s.cfg.MaxBodyBytes, limit: s.cfg.MaxBodyBytes}, nil
}

// lease finds the connection for a request: its session's, or a pooled one.
func (s *Server) lease(ctx context.Context, req *request) (c *Conn, release func(), ex *Exception) {
	if req.sessionID == "" {
		c, err := s.eng.Acquire(ctx, req.readonly)
		if err != nil {
			return nil, nil, &Exception{Code: 203, Name: "NO_FREE_CONNECTION", Message: err.Error()}
		}
		return c, func() { s.eng.Release(c) }, nil
	}
	s.smu.Lock()
	ss, ok := s.sessions[req.sessionID]
	if !ok {
		if req.sessionCheck {
			s.smu.Unlock()
			return nil, nil, &Exception{Code: 372, Name: "SESSION_NOT_FOUND", Message: "Session " + req.sessionID + " not found"}
		}
		if len(s.sessions) >= s.cfg.MaxSessions {
			s.smu.Unlock()
			return nil, nil, &Exception{Code: 202, Name: "TOO_MANY_SIMULTANEOUS_QUERIES", Message: fmt.Sprintf("too many open sessions (%d)", s.cfg.MaxSessions)}
		}
		conn, err := s.eng.openDedicated(req.readOnlyUser)
		if err != nil {
			s.smu.Unlock()
			return nil, nil, engineException(err)
		}
		ss = &session{conn: conn, user: req.user}
		s.sessions[req.sessionID] = ss
	}
	s.smu.Unlock()
	if ss.user != req.user {
		return nil, nil, &Exception{Code: 373, Name: "SESSION_IS_LOCKED", Message: "Session " + req.sessionID + " belongs to another user"}
	}
	if !ss.mu.TryLock() {
		return nil, nil, &Exception{Code: 373, Name: "SESSION_IS_LOCKED", Message: "Session " + req.sessionID + " is locked by a concurrent client"}
	}
	ss.timeout = req.sessionTimeout
	return ss.conn, func() { ss.lastUsed = time.Now(); ss.mu.Unlock() }, nil
}

// prepare brings the connection's database and settings to what the request
// asks for, as a difference to what earlier requests left on it.
func prepare(c *Conn, req *request, inSession bool) error {
	var set []string
	if !inSession {
		for k := range c.settings {
			if _, ok := req.settings[k]; !ok {
				set = append(set, k+" = DEFAULT")
			}
		}
	}
	for k, v := range req.settings {
		if old, ok := c.settings[k]; !ok || old != v {
			set = append(set, k+" = "+settingLiteral(v))
		}
	}
	if len(set) > 0 {
		if _, err := c.Query([]byte("SET "+strings.Join(set, ", ")), "TSV", nil); err != nil {
			c.dirty = true
			return err
		}
		if !inSession {
			c.settings = make(map[string]string, len(req.settings))
		}
		for k, v := range req.settings {
			c.settings[k] = v
		}
		if _, ok := req.settings["readonly"]; ok {
			c.dirty = true // readonly cannot be undone on this connection
		}
	}
	db := req.database
	if db == "" && !inSession {
		db = "default"
	}
	if db != "" && db != c.database && !(c.database == "" && db == "default") {
		if _, err := c.Query([]byte("USE "+quoteIdent(db)), "TSV", nil); err != nil {
			return err
		}
		c.database = db
	}
	return nil
}

var numberRe = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?$`)

func settingLiteral(v string) string {
	if numberRe.MatchString(v) {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

func quoteIdent(s string) string {
	return "`" + strings.NewReplacer(`\`, `\\`, "`", "\\`").Replace(s) + "`"
}

// run executes the request and writes the response. An exception returned
// before anything was written becomes an error response.
func (s *Server) run(w http.ResponseWriter, r *http.Request, req *request) (ex *Exception) {
	ctx := r.Context()
	kind := statementKind(req.sql)
	c, release, lex := s.lease(ctx, req)
	if lex != nil {
		return lex
	}
	defer release()
	broken := false // failed after the response started
	defer func() {
		if ex != nil || broken || ctx.Err() != nil {
			// chDB keeps a failed or cancelled statement's entry in
			// system.processes until the connection runs its next
			// statement (measured with 26.7.3): run a trivial one so
			// nothing is left behind.
			if _, err := c.Query([]byte("SELECT 1 FORMAT Null"), "TSV", nil); err != nil {
				c.dirty = true
			}
		}
	}()
	inSession := req.sessionID != ""
	if err := prepare(c, req, inSession); err != nil {
		return engineException(err)
	}
	if !inSession && (kind == "SET" || kind == "USE") {
		// Without a session a server forgets them after the query; so do we,
		// by not pooling this connection again.
		c.dirty = true
	}
	if kind == "USE" && inSession {
		c.database = "" // unknown until asked again
		c.dirty = true
	}

	// Stop the statement in the engine when the client goes away.
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			s.log.Debug().Str("query_id", req.queryID).Msg("client gone, killing query")
			if err := s.eng.Kill(req.tag); err != nil {
				s.log.Warn().Err(err).Str("query_id", req.queryID).Msg("kill cancelled query")
			}
		case <-done:
		}
	}()
	tagged := []byte("/*" + req.tag + "*/ " + req.sql)

	if kind == "INSERT" && req.body != nil {
		return s.runInsert(w, c, req, tagged)
	}
	format := req.defaultFormat
	if _, _, name, ok := formatClause(req.sql, kind == "INSERT"); ok {
		format = name
	}
	out := s.newResponse(w, req, format)
	if streamable(kind) {
		st, err := c.StreamQuery(tagged, req.defaultFormat, req.params)
		if err != nil {
			return engineException(err)
		}
		complete := false
		defer func() {
			if !complete {
				// An error or a gone client: stop the pipeline's threads too,
				// not only the fetch.
				st.Cancel()
			}
			st.Close()
		}()
		for {
			chunk, err := st.Next()
			if err != nil {
				if !out.started {
					return engineException(err)
				}
				out.trailer(engineException(err))
				broken = true
				return nil
			}
			if chunk == nil {
				complete = true
				break
			}
			if err := out.write(chunk, st.RowsRead, st.BytesRead); err != nil {
				if !out.started {
					return &Exception{Code: 1001, Name: "STD_EXCEPTION", Message: err.Error()}
				}
				broken = true
				return nil
			}
		}
		if err := out.finish(); err != nil {
			if out.started {
				out.trailer(&Exception{Code: 1001, Name: "STD_EXCEPTION", Message: err.Error()})
				broken = true
				return nil
			}
			return &Exception{Code: 1001, Name: "STD_EXCEPTION", Message: err.Error()}
		}
		return nil
	}
	res, err := c.Query(tagged, req.defaultFormat, req.params)
	if err != nil {
		return engineException(err)
	}
	out.summary = summary{ReadRows: res.RowsRead, ReadBytes: res.BytesRead, WrittenRows: res.RowsWritten, WrittenBytes: res.BytesWritten, Elapsed: res.Elapsed}
	if err := out.write(res.Data, res.RowsRead, res.BytesRead); err != nil {
		if !out.started {
			return &Exception{Code: 1001, Name: "STD_EXCEPTION", Message: err.Error()}
		}
		broken = true
		return nil
	}
	if err := out.finish(); err != nil {
		if out.started {
			// Output has begun: the client learns of the error from the trailer.
			out.trailer(&Exception{Code: 1001, Name: "STD_EXCEPTION", Message: err.Error()})
			broken = true
			return nil
		}
		return &Exception{Code: 1001, Name: "STD_EXCEPTION", Message: err.Error()}
	}
	return nil
}

// runInsert streams the body into the engine's streaming INSERT.
func (s *Server) runInsert(w http.ResponseWriter, c *Conn, req *request, tagged []byte) *Exception {
	sql := string(tagged)
	format := "TabSeparated"
	if start, _, name, ok := formatClause(sql, true); ok {
		format = name
		sql = sql[:start]
	} else if start, end, ok := valuesClause(sql); ok {
		format = "Values"
		if strings.TrimSpace(sql[end:]) != "" {
			// INSERT ... VALUES (...) in the URL and more data in the body.
			rest, err := readLimited(req.body, s.cfg.MaxBodyBytes)
			if err != nil {
				return bodyException(err)
			}
			res, err := c.Query(append([]byte(sql+" "), rest...), "TSV", req.params)
			if err != nil {
				return engineException(err)
			}
			return s.insertDone(w, req, res)
		}
		sql = sql[:start]
	}
	ins, err := c.InsertStream([]byte(sql), format, req.params)
	if err != nil {
		return engineException(err)
	}
	defer ins.Close()
	buf := make([]byte, 1<<20)
	for {
		n, rerr := fill(req.body, buf)
		if n > 0 {
			if err := ins.Append(buf[:n]); err != nil {
				ins.Cancel()
				return engineException(err)
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			ins.Cancel()
			return bodyException(rerr)
		}
	}
	res, err := ins.Done()
	if err != nil {
		return engineException(err)
	}
	return s.insertDone(w, req, res)
}

// fill reads until buf is full or the reader ends; only a clean end is
// io.EOF (a truncated compressed frame is io.ErrUnexpectedEOF, an error).
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := r.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (s *Server) insertDone(w http.ResponseWriter, req *request, res *chdb.Result) *Exception {
	h := w.Header()
	s.commonHeaders(h, req)
	h.Set("Content-Type", "text/plain; charset=UTF-8")
	h.Set("X-ClickHouse-Summary", summary{WrittenRows: res.RowsWritten, WrittenBytes: res.BytesWritten, Elapsed: res.Elapsed}.json())
	w.WriteHeader(http.StatusOK)
	return nil
}

type summary struct {
	ReadRows, ReadBytes, WrittenRows, WrittenBytes uint64
	Elapsed                                        float64
}

func (s summary) json() string {
	b, _ := json.Marshal(map[string]string{ //nolint:errcheck // a map of strings always marshals
		"read_rows": strconv.FormatUint(s.ReadRows, 10), "read_bytes": strconv.FormatUint(s.ReadBytes, 10),
		"written_rows": strconv.FormatUint(s.WrittenRows, 10), "written_bytes": strconv.FormatUint(s.WrittenBytes, 10),
		"total_rows_to_read": "0", "result_rows": "0", "result_bytes": "0",
		"elapsed_ns": strconv.FormatInt(int64(s.Elapsed*1e9), 10),
	})
	return string(b)
}

// response writes query output: reframing Native, then ClickHouse block
// compression, then HTTP compression; headers go out with the first bytes.
type response struct {
	w        http.ResponseWriter
	s        *Server
	req      *request
	format   string
	reframe  *nativeReframer
	started  bool
	tag      string
	summary  summary
	body     io.Writer // after HTTP compression
	httpEnc  io.WriteCloser
	blockEnc *compress.Writer
}

func (s *Server) newResponse(w http.ResponseWriter, req *request, format string) *response {
	out := &response{w: w, s: s, req: req, format: format, tag: randomHex(8)}
	if strings.EqualFold(format, "Native") {
		out.reframe = newNativeReframer(req.revision, req.revision)
	}
	if req.compress && req.compressMethod != compress.None {
		out.blockEnc = compress.NewWriter(compress.LevelZero, req.compressMethod)
	}
	return out
}

func contentType(format string) string {
	switch f := strings.ToLower(format); {
	case strings.HasPrefix(f, "json") && !strings.Contains(f, "eachrow") && !strings.Contains(f, "lines") && !strings.Contains(f, "compacteach"):
		return "application/json; charset=UTF-8"
	case strings.Contains(f, "eachrow"), f == "jsonlines", f == "ndjson":
		return "application/x-ndjson; charset=UTF-8"
	case strings.HasPrefix(f, "tabseparated"), strings.HasPrefix(f, "tsv"):
		return "text/tab-separated-values; charset=UTF-8"
	case strings.HasPrefix(f, "csv"):
		return "text/csv; charset=UTF-8; header=absent"
	case f == "native", strings.HasPrefix(f, "rowbinary"), f == "parquet", f == "arrow", f == "arrowstream", f == "orc", f == "avro", f == "protobuf", f == "msgpack":
		return "application/octet-stream"
	}
	return "text/plain; charset=UTF-8"
}

func (o *response) start(rows, bytes uint64) {
	o.started = true
	h := o.w.Header()
	o.s.commonHeaders(h, o.req)
	h.Set("Content-Type", contentType(o.format))
	h.Set("X-ClickHouse-Format", o.format)
	h.Set("X-ClickHouse-Exception-Tag", o.tag)
	if o.summary == (summary{}) {
		o.summary = summary{ReadRows: rows, ReadBytes: bytes}
	}
	h.Set("X-ClickHouse-Summary", o.summary.json())
	o.body = o.w
	switch o.req.httpCompress {
	case "gzip":
		o.httpEnc = gzip.NewWriter(o.w)
	case "deflate":
		o.httpEnc = zlib.NewWriter(o.w)
	case "br":
		o.httpEnc = brotli.NewWriter(o.w)
	case "zstd":
		zw, err := zstd.NewWriter(o.w)
		if err == nil {
			o.httpEnc = zw
		}
	}
	if o.httpEnc != nil {
		h.Set("Content-Encoding", o.req.httpCompress)
		o.body = o.httpEnc
	}
	o.w.WriteHeader(http.StatusOK)
}

func (o *response) write(chunk []byte, rows, bytes uint64) error {
	data := chunk
	if o.reframe != nil {
		var err error
		if data, err = o.reframe.Write(chunk); err != nil {
			return err
		}
	}
	if len(data) == 0 && o.started {
		return nil
	}
	if !o.started {
		o.start(rows, bytes)
	}
	if err := o.emit(data); err != nil {
		return err
	}
	if f, ok := o.w.(http.Flusher); ok && o.httpEnc == nil {
		f.Flush()
	}
	return nil
}

func (o *response) emit(data []byte) error {
	if len(data) == 0 {
		return nil
	}
	if o.blockEnc != nil {
		for len(data) > 0 {
			n := min(len(data), 1<<20)
			if err := o.blockEnc.Compress(data[:n]); err != nil {
				return fmt.Errorf("compress response: %w", err)
			}
			if _, err := o.body.Write(o.blockEnc.Data); err != nil {
				return err
			}
			data = data[n:]
		}
		return nil
	}
	_, err := o.body.Write(data)
	return err
}

func (o *response) finish() error {
	if o.reframe != nil {
		if err := o.reframe.Finish(); err != nil {
			return err
		}
	}
	if !o.started {
		o.start(0, 0)
	}
	if o.httpEnc != nil {
		return o.httpEnc.Close()
	}
	return nil
}

// trailer writes the tagged exception block after data has started, as
// ClickHouse's server does: the client finds it by the tag in the header.
func (o *response) trailer(ex *Exception) {
	msg := strings.TrimRight(ex.body(), "\n")
	block := fmt.Sprintf("\r\n__exception__\r\n%s\r\n%s\n%d %s\r\n__exception__\r\n", o.tag, msg, len(msg), o.tag)
	_ = o.emit([]byte(block)) //nolint:errcheck // the client may be gone; nothing else to tell it
	if o.httpEnc != nil {
		_ = o.httpEnc.Close() //nolint:errcheck // as above
	}
}
