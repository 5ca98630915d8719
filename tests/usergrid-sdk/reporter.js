'use strict'
// A mocha 3 reporter for run.sh: one line per test on stdout, and every test's outcome as JSON
// in $SDK_RESULTS (passed, failed, pending, and tests that never ran because a hook failed).
// With $SDK_TRACE set, also appends each test's and hook's start and each failure to that
// file, where trace-proxy.mjs appends the HTTP exchanges, so requests can be told apart by test.
var fs = require('fs')
var Base = require('mocha/lib/reporters/base')

function allTests(suite, out) {
    suite.tests.forEach(function(t) { out.push(t) })
    suite.suites.forEach(function(s) { allTests(s, out) })
    return out
}

function errInfo(err) {
    // should.js puts the whole inspected object in its messages (a response is thousands of lines)
    var message = String(err && err.message || err)
    if (message.length > 1500) message = message.slice(0, 700) + '\n  […]\n' + message.slice(-700)
    return {
        message: message,
        stack: String(err && err.stack || '').split('\n').slice(0, 6).join('\n')
    }
}

function Reporter(runner) {
    Base.call(this, runner)
    var results = []
    var seen = {}
    var trace = process.env.SDK_TRACE
    function mark(ev, title, extra) {
        if (!trace) return
        var line = { ev: ev, title: title, t: Date.now() }
        if (extra) Object.assign(line, extra)
        fs.appendFileSync(trace, JSON.stringify(line) + '\n')
    }

    runner.on('hook', function(hook) { mark('hook', hook.fullTitle()) })
    runner.on('test', function(test) { mark('test', test.fullTitle()) })
    runner.on('pass', function(test) {
        seen[test.fullTitle()] = true
        results.push({ fullTitle: test.fullTitle(), state: 'passed', duration: test.duration })
        console.log('  ok   ' + test.fullTitle())
    })
    runner.on('pending', function(test) {
        seen[test.fullTitle()] = true
        results.push({ fullTitle: test.fullTitle(), state: 'pending' })
        console.log('  skip ' + test.fullTitle())
    })
    runner.on('fail', function(test, err) {
        var title = test.fullTitle()
        var info = errInfo(err)
        mark('fail', title, { err: info.message })
        // a test can be reported failed twice (an async throw after it timed out): keep the first
        // failure; one reported passed and then failed counts as failed
        var earlier = results.filter(function(r) { return r.fullTitle === title })[0]
        if (earlier && earlier.state === 'failed') return
        seen[title] = true
        var result = { fullTitle: title, state: 'failed', hook: test.type === 'hook', err: info }
        if (earlier) Object.assign(earlier, result)
        else results.push(result)
        console.log('  FAIL ' + title + '\n         ' + info.message.split('\n')[0])
    })
    runner.on('end', function() {
        allTests(runner.suite, []).forEach(function(test) {
            if (!seen[test.fullTitle()]) {
                results.push({ fullTitle: test.fullTitle(), state: 'not run' })
                console.log('  --   ' + test.fullTitle() + ' (not run)')
            }
        })
        if (process.env.SDK_RESULTS) {
            fs.writeFileSync(process.env.SDK_RESULTS, JSON.stringify(results, null, 2) + '\n')
        }
    })
}

module.exports = Reporter
