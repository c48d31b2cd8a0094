// Shared pieces of the `asa` command: subcommand entry points and strict option parsing.
#ifndef ASA_CLI_H
#define ASA_CLI_H

int cmd_info(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_prepare(int argc, char **argv);
int cmd_tokenizer(int argc, char **argv);
int cmd_eval(int argc, char **argv);

// Parse a flag's value; on error print "asa <cmd>: --flag: <problem>" and return -1.
int cli_parse_int(const char *cmd, const char *flag, const char *val, long lo, long hi, int *out);
int cli_parse_float(const char *cmd, const char *flag, const char *val, double lo, double hi, float *out);
// Returns argv[*i + 1] and advances *i, or prints an error naming the flag and returns NULL.
const char *cli_value(const char *cmd, int argc, char **argv, int *i);
// Expands files and directories (recursively, sorted) into a list of regular files; prints an error
// naming the path and returns -1 on a missing path or when nothing is found.
int cli_collect_inputs(const char *cmd, char *const *inputs, int n, char ***files, int *nfiles);
void cli_free_inputs(char **files, int n);

// Human-readable count: 1.23K, 4.56M, 7.89B.
const char *cli_human(double x, char *buf, int n);
const char *cli_bytes(double bytes, char *buf, int n);

#endif
