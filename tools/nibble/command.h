#pragma once
// Each subcommand lives in its own file and registers itself here, so adding a command
// touches no other file.
#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace nibble::cli {

// Adds the subcommand to `app` and returns the function that runs it once parsed.
using CommandSetup = std::function<std::function<int()>(CLI::App& app)>;

struct CommandRegistration {
  CommandRegistration(std::string name, CommandSetup setup);
};

struct RegisteredCommand {
  std::string name;
  CommandSetup setup;
};
std::vector<RegisteredCommand>& registered_commands();

}  // namespace nibble::cli

#define NIBBLE_COMMAND(name, setup) \
  static const ::nibble::cli::CommandRegistration nibble_command_registration_##name(#name, setup)
