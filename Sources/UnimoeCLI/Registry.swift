/// Every `unimoe` subcommand, in the order `unimoe help` lists them. Add one line per command.
public let allCommands: [any Command.Type] = [
    BenchCommand.self,
    MediaCommand.self,
    TokenizeCommand.self,
    DetokenizeCommand.self,
    LogitsCommand.self,
    GenerateCommand.self,
    ConvertCommand.self,
    QuantizeCommand.self,
    EmbedCommand.self,
    AskCommand.self,
    RunCommand.self,
    TrainCommand.self,
    EvalCommand.self,
    WireBenchCommand.self,
    KeysCommand.self,
]
