# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_backscatter_milter_global_optspecs
    string join \n c/config= check-config h/help V/version
end

function __fish_backscatter_milter_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_backscatter_milter_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_backscatter_milter_using_subcommand
    set -l cmd (__fish_backscatter_milter_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c backscatter-milter -n "__fish_backscatter_milter_needs_command" -s c -l config -d 'The configuration file' -r -F
complete -c backscatter-milter -n "__fish_backscatter_milter_needs_command" -l check-config -d 'Check the configuration and everything it names (key file, token file, socket owner, state directory) without writing anything; exit 0, or 78 on a configuration error'
complete -c backscatter-milter -n "__fish_backscatter_milter_needs_command" -s h -l help -d 'Print help'
complete -c backscatter-milter -n "__fish_backscatter_milter_needs_command" -s V -l version -d 'Print version'
complete -c backscatter-milter -n "__fish_backscatter_milter_needs_command" -f -a "sign" -d 'Print ADDRESS with a BATV tag, signed on --date (default today). Reads only the config and the key file'
complete -c backscatter-milter -n "__fish_backscatter_milter_needs_command" -f -a "verify" -d 'Check the BATV tag of ADDRESS on --date (default today): print the plain address and key id and exit 0, or say why not and exit 1. Reads only the config and the key file'
complete -c backscatter-milter -n "__fish_backscatter_milter_needs_command" -f -a "classify" -d 'Analyse messages (bounce, delay, auto-reply, ...): one result per FILE, `-` for standard input. The ledger is only read'
complete -c backscatter-milter -n "__fish_backscatter_milter_needs_command" -f -a "postfix-map" -d 'Print Postfix\'s recipient_canonical_maps regexp table for the configured batv.sign_domains (reads only the config)'
complete -c backscatter-milter -n "__fish_backscatter_milter_needs_command" -f -a "keygen" -d 'Print a new key line for the key file'
complete -c backscatter-milter -n "__fish_backscatter_milter_needs_command" -f -a "decisions" -d 'Print the last judged messages, newest first, read from the running milter\'s endpoint ([stats] listen, with the token of token_file)'
complete -c backscatter-milter -n "__fish_backscatter_milter_needs_command" -f -a "quarantine" -d 'The messages we held (Postfix\'s hold queue, Sendmail\'s quarantine): list them with our reasons, release or delete them through the MTA\'s own commands'
complete -c backscatter-milter -n "__fish_backscatter_milter_needs_command" -f -a "exemptions" -d 'Destinations that refused our tagged sender: suggest exemptions (read from the running milter\'s endpoint), or forget a learned one'
complete -c backscatter-milter -n "__fish_backscatter_milter_needs_command" -f -a "report" -d 'What enforce would have done (read from the running milter\'s endpoint): counts by decided action and reason, top sources, proofs that saved genuine bounces, any bounce to a valid tag that would be stopped, and a readiness line. Exit 0 when ready, 3 when not'
complete -c backscatter-milter -n "__fish_backscatter_milter_needs_command" -f -a "man" -d 'Print the man page backscatter-milter(8), roff, on standard output'
complete -c backscatter-milter -n "__fish_backscatter_milter_needs_command" -f -a "completions" -d 'Print the completion script for SHELL on standard output'
complete -c backscatter-milter -n "__fish_backscatter_milter_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand sign" -l date -r
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand sign" -s c -l config -d 'The configuration file' -r -F
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand sign" -s h -l help -d 'Print help'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand verify" -l date -r
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand verify" -s c -l config -d 'The configuration file' -r -F
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand verify" -s h -l help -d 'Print help'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand classify" -l mail-from -d 'The envelope sender, when known (\'\' or \'<>\' for the null sender)' -r
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand classify" -l rcpt -d 'An envelope recipient (repeatable); with it, the verdict the milter would reach for this envelope is printed too' -r
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand classify" -s c -l config -d 'The configuration file' -r -F
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand classify" -l json -d 'One JSON object per line'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand classify" -s h -l help -d 'Print help'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand postfix-map" -s c -l config -d 'The configuration file' -r -F
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand postfix-map" -s h -l help -d 'Print help'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand keygen" -l id -d 'The key id, 0-9' -r
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand keygen" -s c -l config -d 'The configuration file' -r -F
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand keygen" -s h -l help -d 'Print help'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand decisions" -l action -d 'Only those decided so: accept, tag, quarantine, reject' -r
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand decisions" -l kind -d 'Only this kind: bounce, delay, autoreply, challenge, ...' -r
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand decisions" -l limit -d 'At most this many' -r
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand decisions" -s c -l config -d 'The configuration file' -r -F
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand decisions" -s e -l explain -d 'Each reason in words under its row'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand decisions" -l json -d 'The JSON as served'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand decisions" -s h -l help -d 'Print help'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand quarantine; and not __fish_seen_subcommand_from list release delete help" -l mta -d 'Which MTA holds them' -r -f -a "postfix\t''
sendmail\t''"
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand quarantine; and not __fish_seen_subcommand_from list release delete help" -l postfix-config -d 'Postfix\'s configuration directory (postqueue/postsuper -c), when not the default' -r -F
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand quarantine; and not __fish_seen_subcommand_from list release delete help" -s c -l config -d 'The configuration file' -r -F
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand quarantine; and not __fish_seen_subcommand_from list release delete help" -s h -l help -d 'Print help'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand quarantine; and not __fish_seen_subcommand_from list release delete help" -f -a "list" -d 'The messages we held, oldest first, with our verdict and reasons'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand quarantine; and not __fish_seen_subcommand_from list release delete help" -f -a "release" -d 'Release held messages (they are delivered now)'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand quarantine; and not __fish_seen_subcommand_from list release delete help" -f -a "delete" -d 'Delete held messages (Postfix only)'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand quarantine; and not __fish_seen_subcommand_from list release delete help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand quarantine; and __fish_seen_subcommand_from list" -l mta -d 'Which MTA holds them' -r -f -a "postfix\t''
sendmail\t''"
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand quarantine; and __fish_seen_subcommand_from list" -l postfix-config -d 'Postfix\'s configuration directory (postqueue/postsuper -c), when not the default' -r -F
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand quarantine; and __fish_seen_subcommand_from list" -s c -l config -d 'The configuration file' -r -F
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand quarantine; and __fish_seen_subcommand_from list" -s e -l explain -d 'Each reason in words under its row'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand quarantine; and __fish_seen_subcommand_from list" -l json -d 'One JSON object per message'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand quarantine; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand quarantine; and __fish_seen_subcommand_from release" -l mta -d 'Which MTA holds them' -r -f -a "postfix\t''
sendmail\t''"
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand quarantine; and __fish_seen_subcommand_from release" -l postfix-config -d 'Postfix\'s configuration directory (postqueue/postsuper -c), when not the default' -r -F
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand quarantine; and __fish_seen_subcommand_from release" -s c -l config -d 'The configuration file' -r -F
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand quarantine; and __fish_seen_subcommand_from release" -s h -l help -d 'Print help'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand quarantine; and __fish_seen_subcommand_from delete" -l mta -d 'Which MTA holds them' -r -f -a "postfix\t''
sendmail\t''"
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand quarantine; and __fish_seen_subcommand_from delete" -l postfix-config -d 'Postfix\'s configuration directory (postqueue/postsuper -c), when not the default' -r -F
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand quarantine; and __fish_seen_subcommand_from delete" -s c -l config -d 'The configuration file' -r -F
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand quarantine; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand quarantine; and __fish_seen_subcommand_from help" -f -a "list" -d 'The messages we held, oldest first, with our verdict and reasons'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand quarantine; and __fish_seen_subcommand_from help" -f -a "release" -d 'Release held messages (they are delivered now)'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand quarantine; and __fish_seen_subcommand_from help" -f -a "delete" -d 'Delete held messages (Postfix only)'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand quarantine; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand exemptions; and not __fish_seen_subcommand_from suggest forget help" -s c -l config -d 'The configuration file' -r -F
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand exemptions; and not __fish_seen_subcommand_from suggest forget help" -s h -l help -d 'Print help'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand exemptions; and not __fish_seen_subcommand_from suggest forget help" -f -a "suggest" -d 'List them with their refusals and a sample diagnostic, and print the exempt_recipient_domains line to add'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand exemptions; and not __fish_seen_subcommand_from suggest forget help" -f -a "forget" -d 'Revoke a learned exemption (in the state directory\'s refusing-domains.json; the milter reads it at its next reload) and never learn it again'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand exemptions; and not __fish_seen_subcommand_from suggest forget help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand exemptions; and __fish_seen_subcommand_from suggest" -s c -l config -d 'The configuration file' -r -F
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand exemptions; and __fish_seen_subcommand_from suggest" -s h -l help -d 'Print help'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand exemptions; and __fish_seen_subcommand_from forget" -s c -l config -d 'The configuration file' -r -F
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand exemptions; and __fish_seen_subcommand_from forget" -s h -l help -d 'Print help'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand exemptions; and __fish_seen_subcommand_from help" -f -a "suggest" -d 'List them with their refusals and a sample diagnostic, and print the exempt_recipient_domains line to add'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand exemptions; and __fish_seen_subcommand_from help" -f -a "forget" -d 'Revoke a learned exemption (in the state directory\'s refusing-domains.json; the milter reads it at its next reload) and never learn it again'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand exemptions; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand report" -l since -d 'Only decisions at most this old: 90s, 30m, 12h, 7d (default: all remembered, see [stats] recent_decisions)' -r
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand report" -l min-judged -d 'Judged messages needed before the verdict can be ready' -r
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand report" -s c -l config -d 'The configuration file' -r -F
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand report" -s h -l help -d 'Print help'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand man" -s c -l config -d 'The configuration file' -r -F
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand man" -s h -l help -d 'Print help'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand completions" -s c -l config -d 'The configuration file' -r -F
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand completions" -s h -l help -d 'Print help'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand help; and not __fish_seen_subcommand_from sign verify classify postfix-map keygen decisions quarantine exemptions report man completions help" -f -a "sign" -d 'Print ADDRESS with a BATV tag, signed on --date (default today). Reads only the config and the key file'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand help; and not __fish_seen_subcommand_from sign verify classify postfix-map keygen decisions quarantine exemptions report man completions help" -f -a "verify" -d 'Check the BATV tag of ADDRESS on --date (default today): print the plain address and key id and exit 0, or say why not and exit 1. Reads only the config and the key file'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand help; and not __fish_seen_subcommand_from sign verify classify postfix-map keygen decisions quarantine exemptions report man completions help" -f -a "classify" -d 'Analyse messages (bounce, delay, auto-reply, ...): one result per FILE, `-` for standard input. The ledger is only read'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand help; and not __fish_seen_subcommand_from sign verify classify postfix-map keygen decisions quarantine exemptions report man completions help" -f -a "postfix-map" -d 'Print Postfix\'s recipient_canonical_maps regexp table for the configured batv.sign_domains (reads only the config)'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand help; and not __fish_seen_subcommand_from sign verify classify postfix-map keygen decisions quarantine exemptions report man completions help" -f -a "keygen" -d 'Print a new key line for the key file'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand help; and not __fish_seen_subcommand_from sign verify classify postfix-map keygen decisions quarantine exemptions report man completions help" -f -a "decisions" -d 'Print the last judged messages, newest first, read from the running milter\'s endpoint ([stats] listen, with the token of token_file)'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand help; and not __fish_seen_subcommand_from sign verify classify postfix-map keygen decisions quarantine exemptions report man completions help" -f -a "quarantine" -d 'The messages we held (Postfix\'s hold queue, Sendmail\'s quarantine): list them with our reasons, release or delete them through the MTA\'s own commands'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand help; and not __fish_seen_subcommand_from sign verify classify postfix-map keygen decisions quarantine exemptions report man completions help" -f -a "exemptions" -d 'Destinations that refused our tagged sender: suggest exemptions (read from the running milter\'s endpoint), or forget a learned one'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand help; and not __fish_seen_subcommand_from sign verify classify postfix-map keygen decisions quarantine exemptions report man completions help" -f -a "report" -d 'What enforce would have done (read from the running milter\'s endpoint): counts by decided action and reason, top sources, proofs that saved genuine bounces, any bounce to a valid tag that would be stopped, and a readiness line. Exit 0 when ready, 3 when not'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand help; and not __fish_seen_subcommand_from sign verify classify postfix-map keygen decisions quarantine exemptions report man completions help" -f -a "man" -d 'Print the man page backscatter-milter(8), roff, on standard output'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand help; and not __fish_seen_subcommand_from sign verify classify postfix-map keygen decisions quarantine exemptions report man completions help" -f -a "completions" -d 'Print the completion script for SHELL on standard output'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand help; and not __fish_seen_subcommand_from sign verify classify postfix-map keygen decisions quarantine exemptions report man completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand help; and __fish_seen_subcommand_from quarantine" -f -a "list" -d 'The messages we held, oldest first, with our verdict and reasons'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand help; and __fish_seen_subcommand_from quarantine" -f -a "release" -d 'Release held messages (they are delivered now)'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand help; and __fish_seen_subcommand_from quarantine" -f -a "delete" -d 'Delete held messages (Postfix only)'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand help; and __fish_seen_subcommand_from exemptions" -f -a "suggest" -d 'List them with their refusals and a sample diagnostic, and print the exempt_recipient_domains line to add'
complete -c backscatter-milter -n "__fish_backscatter_milter_using_subcommand help; and __fish_seen_subcommand_from exemptions" -f -a "forget" -d 'Revoke a learned exemption (in the state directory\'s refusing-domains.json; the milter reads it at its next reload) and never learn it again'
