package engine

import (
	"net/http"
	"net/url"
	"strings"
	"sync"
)

// The embedded engine runs as clickhouse-local does: as the process's own
// user, with every file the process may read or write within reach of file(),
// INTO OUTFILE and the File engine, every host within reach of url(), and
// grants, user_files_path and remote_url_allow_hosts not enforced (measured
// with 26.7.3: a REVOKE FILE in a users config, a user_files_path and a
// readonly=2 connection all still let file() read and INSERT INTO FUNCTION
// file() write anywhere). So the HTTP interface refuses, for every user, each
// statement that names something reaching outside the engine: a table
// function, table engine, database engine, dictionary source or layout that
// reads or writes files, runs programs or opens connections. url() is allowed
// only with a literal address on a configured host (region moves between
// servers need it). The set is computed from the engine's own lists, less a
// known-safe set, so a function a future version adds is refused until it is
// reviewed.

// safeCallables are the table functions and engines that stay inside the
// engine's own data (lower case).
var safeCallables = setOf(
	// table functions
	"numbers", "numbers_mt", "zeros", "zeros_mt", "primes", "generaterandom", "generateseries", "generate_series",
	"values", "sqlstandardvalues", "view", "viewexplain", "viewifpermitted", "merge", "mergetreeindex",
	"mergetreeanalyzeindexes", "mergetreeanalyzeindexesuuid", "mergetreeprojection", "mergetreetextindex",
	"input", "null", "format", "dictionary", "loop", "fuzzjson", "fuzzquery", "prometheusquery",
	"prometheusqueryrange", "timeseriesdata", "timeseriesmetrics", "timeseriessamples", "timeseriesselector",
	"timeseriestags",
	// table engines
	"mergetree", "aggregatingmergetree", "coalescingmergetree", "collapsingmergetree", "graphitemergetree",
	"replacingmergetree", "summingmergetree", "versionedcollapsingmergetree", "replicatedmergetree",
	"replicatedaggregatingmergetree", "replicatedcoalescingmergetree", "replicatedcollapsingmergetree",
	"replicatedgraphitemergetree", "replicatedreplacingmergetree", "replicatedsummingmergetree",
	"replicatedversionedcollapsingmergetree", "buffer", "join", "log", "tinylog", "stripelog", "memory", "set",
	"materializedview", "windowview", "alias", "timeseries", "keepermap",
	// database engines
	"atomic", "ordinary", "replicated", "lazy",
)

// outsideCallables always reach outside, whatever the engine lists: table
// functions and engines, database engines, dictionary sources and layouts
// that take a path, a host or a program (lower case).
var outsideCallables = setOf(
	"file", "filecluster", "filesystem", "url", "urlcluster", "s3", "s3cluster", "gcs", "oss", "cosn",
	"azureblobstorage", "azureblobstoragecluster", "hdfs", "hdfscluster", "remote", "remotesecure", "cluster",
	"clusterallreplicas", "distributed", "executable", "executablepool", "executable_pool", "mysql",
	"postgresql", "materializedpostgresql", "mongodb", "redis", "odbc", "jdbc", "sqlite", "hive", "kafka",
	"nats", "rabbitmq", "filelog", "s3queue", "azurequeue", "embeddedrocksdb", "iceberg", "deltalake", "hudi",
	"paimon", "ytsaurus", "arrowflight", "arrowstream", "backup", "datalakecatalog", "http", "https",
	"clickhouse", "cassandra", "library", "yamlregexptree", "regexp_tree", "ssd_cache",
	"complex_key_ssd_cache", "disk", "queryrunner", "eval",
)

// outsideWords may not appear as bare words at all: the client-side file
// clauses and settings that name files.
var outsideWords = setOf("outfile", "infile", "format_schema", "output_format_schema",
	"format_template_resultset", "format_template_row", "format_schema_source")

// refusedKinds are statements that read or write outside by design.
var refusedKinds = setOf("BACKUP", "RESTORE")

func setOf(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// sandbox holds what may be called.
type sandbox struct {
	refused map[string]bool // lower-case callables that reach outside

	mu       sync.RWMutex
	urlHosts map[string]bool // lower-case host:port url() may read
}

func (sb *sandbox) allowHost(hostport string) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	sb.urlHosts[strings.ToLower(hostport)] = true
}

// newSandbox refuses outsideCallables and every listed name that is not
// known to be safe.
func newSandbox(listed []string, urlHosts []string) *sandbox {
	sb := &sandbox{refused: map[string]bool{}, urlHosts: map[string]bool{}}
	for n := range outsideCallables {
		sb.refused[n] = true
	}
	for _, n := range listed {
		n = strings.ToLower(strings.TrimSpace(n))
		if n != "" && !safeCallables[n] {
			sb.refused[n] = true
		}
	}
	for _, h := range urlHosts {
		sb.urlHosts[strings.ToLower(h)] = true
	}
	return sb
}

func refusal(msg string) *Exception {
	return &Exception{Code: 497, Name: "ACCESS_DENIED", Status: http.StatusForbidden, Message: msg}
}

// checkSetting refuses a setting that names a file.
func (sb *sandbox) checkSetting(name string) *Exception {
	if outsideWords[strings.ToLower(name)] {
		return refusal("setting " + name + " is not allowed on this server: it names a file")
	}
	return nil
}

// check refuses a statement that reaches outside the engine.
func (sb *sandbox) check(sql string) *Exception {
	if refusedKinds[statementKind(sql)] {
		return refusal(statementKind(sql) + " is not allowed on this server: it reads or writes files")
	}
	toks := lexSQL(sql)
	for i, t := range toks {
		if t.kind != tokWord {
			continue
		}
		name := strings.ToLower(t.text)
		if !t.quoted && outsideWords[name] {
			return refusal(strings.ToUpper(t.text) + " is not allowed on this server: it reads or writes files of the server process")
		}
		if i+1 >= len(toks) || toks[i+1].kind != tokOpen || !sb.refused[name] {
			continue
		}
		if name == "url" && i+2 < len(toks) && toks[i+2].kind == tokString && sb.allowedURL(toks[i+2].text) {
			continue
		}
		if name == "url" {
			return refusal("url() may read only a literal http(s) address on a configured host (a region's engine)")
		}
		return refusal(t.text + "() is not allowed on this server: it reaches files, programs or hosts outside the engine")
	}
	return nil
}

func (sb *sandbox) allowedURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return false
	}
	host := strings.ToLower(u.Host)
	if u.Port() == "" {
		if u.Scheme == "https" {
			host += ":443"
		} else {
			host += ":80"
		}
	}
	sb.mu.RLock()
	defer sb.mu.RUnlock()
	return sb.urlHosts[host]
}

type tokKind int

const (
	tokWord   tokKind = iota // identifier or keyword, bare or quoted
	tokString                // string literal, unescaped
	tokOpen                  // (
	tokOther                 // any other punctuation or number
)

type sqlToken struct {
	kind   tokKind
	text   string
	quoted bool
}

// lexSQL splits SQL into the tokens the sandbox needs, skipping comments and
// white space. Quoted identifiers (`x`, "x") are words: `file`('…') calls
// file() too.
func lexSQL(s string) []sqlToken {
	var out []sqlToken
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		case c == '-' && i+1 < len(s) && s[i+1] == '-', c == '#' && i+1 < len(s) && (s[i+1] == ' ' || s[i+1] == '!'):
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(s) && s[i+1] == '*':
			// ClickHouse comments nest.
			depth := 0
			for i < len(s) {
				if s[i] == '/' && i+1 < len(s) && s[i+1] == '*' {
					depth++
					i += 2
					continue
				}
				if s[i] == '*' && i+1 < len(s) && s[i+1] == '/' {
					depth--
					i += 2
					if depth == 0 {
						break
					}
					continue
				}
				i++
			}
		case c == '\'' || c == '"' || c == '`':
			var b strings.Builder
			i++
			for i < len(s) {
				if s[i] == '\\' && i+1 < len(s) {
					b.WriteByte(unescape(s[i+1]))
					i += 2
					continue
				}
				if s[i] == c {
					if i+1 < len(s) && s[i+1] == c { // doubled quote
						b.WriteByte(c)
						i += 2
						continue
					}
					break
				}
				b.WriteByte(s[i])
				i++
			}
			i++
			if c == '\'' {
				out = append(out, sqlToken{kind: tokString, text: b.String()})
			} else {
				out = append(out, sqlToken{kind: tokWord, text: b.String(), quoted: true})
			}
		case c == '(':
			out = append(out, sqlToken{kind: tokOpen, text: "("})
			i++
		case isWordStart(c) || c >= 0x80:
			j := i + 1
			for j < len(s) && (isWordChar(s[j]) || s[j] >= 0x80) {
				j++
			}
			out = append(out, sqlToken{kind: tokWord, text: s[i:j]})
			i = j
		default:
			j := i + 1
			if c >= '0' && c <= '9' {
				for j < len(s) && (isWordChar(s[j]) || s[j] == '.') {
					j++
				}
			}
			out = append(out, sqlToken{kind: tokOther, text: s[i:j]})
			i = j
		}
	}
	return out
}

func unescape(c byte) byte {
	switch c {
	case 'n':
		return '\n'
	case 't':
		return '\t'
	case 'r':
		return '\r'
	case '0':
		return 0
	}
	return c
}
